//! Plain HTTP/1 listeners shared by the operator's admin endpoint, the fake API server and the verifier.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

/// The next accepted connection on `listener` (named `what` in logs). Accept
/// errors (out of file descriptors and the like) back off instead of spinning.
pub(crate) async fn accept(listener: &TcpListener, what: &'static str) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => return stream,
            Err(err) => {
                warn!(error = %err, listener = what, "accept failed");
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
