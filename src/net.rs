//! Plain HTTP/1 listeners shared by the operator's admin endpoint, the fake API server and the verifier.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

/// Accept errors are logged at most this often, process-wide; the line says how many were not.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

static ACCEPT_ERRORS: Mutex<LogLimit> = Mutex::new(LogLimit::new());

/// A log line allowed at most once per interval, counting the ones left out.
#[derive(Debug)]
pub(crate) struct LogLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    pub(crate) const fn new() -> LogLimit {
        LogLimit { last: None, suppressed: 0 }
    }

    /// Whether to log at `now`: `Some(lines left out since the last one)`, or `None` (counted).
    pub(crate) fn allow(&mut self, now: Instant, every: Duration) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The next accepted connection on `listener` (named `what` in logs). Accept
/// errors (out of file descriptors and the like) back off instead of spinning,
/// and are logged at most every [`ACCEPT_ERROR_LOG_EVERY`].
pub(crate) async fn accept(listener: &TcpListener, what: &'static str) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => return stream,
            Err(err) => {
                let allowed = ACCEPT_ERRORS
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .allow(Instant::now(), ACCEPT_ERROR_LOG_EVERY);
                if let Some(suppressed) = allowed {
                    warn!(error = %err, listener = what, suppressed, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serve `listener` with `handler`, one task per connection, until `shutdown` resolves.
pub(crate) async fn serve_http1<H, F, B>(
    listener: TcpListener,
    what: &'static str,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => return,
            stream = accept(&listener, what) => stream,
        };
        let service = service_fn(handler.clone());
        tokio::spawn(async move {
            if let Err(e) =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
            {
                // hyper's messages name the failure, never request contents.
                debug!(error = %e, listener = what, "connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_log_lines_are_let_through_once_per_interval_with_a_count_of_the_rest() {
        let mut limit = LogLimit::new();
        let t0 = Instant::now();
        let every = Duration::from_secs(10);
        assert_eq!(limit.allow(t0, every), Some(0));
        let quiet: Vec<_> = (1..=440).map(|i| limit.allow(t0 + Duration::from_millis(i * 20), every)).collect();
        assert!(quiet.iter().all(Option::is_none), "440 errors within 10 s: one line");
        assert_eq!(limit.allow(t0 + every, every), Some(440));
        assert_eq!(limit.allow(t0 + every + Duration::from_secs(1), every), None);
    }
}
