//! The admin listener of every long-running process: `/metrics`, `/healthz` and `/readyz` over plain HTTP/1.
//!
//! Built on hyper directly: three fixed routes need no framework. What a
//! process reports is a [`Report`]; [`respond`] is the whole routing table,
//! so tests call it in process; [`serve`] only accepts connections.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::Full;
use tokio::net::TcpListener;

/// What a process tells its admin listener.
pub trait Report: Send + Sync + 'static {
    /// `Ok` when the process should receive work; otherwise the `/readyz` body saying why not.
    fn readiness(&self) -> Result<(), &'static str>;
    /// The process's metrics, in OpenMetrics text.
    fn metrics(&self) -> String;
}

/// The content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}

/// Answer one request.
#[must_use]
pub fn respond(report: &dyn Report, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "method not allowed\n");
    }
    match path {
        "/metrics" => text(StatusCode::OK, OPENMETRICS, report.metrics()),
        // Alive as long as this task is served: a wedged runtime answers nothing and the probe fails.
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => match report.readiness() {
            Ok(()) => text(StatusCode::OK, "text/plain", "ready\n"),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", why),
        },
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// Serve `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, report: Arc<dyn Report>, shutdown: impl Future<Output = ()>) {
    let handler = move |req: http::Request<hyper::body::Incoming>| {
        let response = respond(report.as_ref(), req.method(), req.uri().path());
        async move { Ok::<_, Infallible>(response) }
    };
    crate::net::serve_http1(listener, "admin", handler, shutdown).await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use http_body_util::BodyExt;

    use super::*;

    #[derive(Default)]
    struct Stub {
        ready: AtomicBool,
    }

    impl Report for Stub {
        fn readiness(&self) -> Result<(), &'static str> {
            if self.ready.load(Ordering::Relaxed) { Ok(()) } else { Err("not ready: stub\n") }
        }
        fn metrics(&self) -> String {
            "stub_metric 1\n".to_owned()
        }
    }

    #[tokio::test]
    async fn readyz_answers_503_with_the_reason_until_the_process_is_ready() {
        let stub = Stub::default();
        let answer = respond(&stub, &Method::GET, "/readyz");
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, Bytes::from_static(b"not ready: stub\n"));
        stub.ready.store(true, Ordering::Relaxed);
        assert_eq!(respond(&stub, &Method::GET, "/readyz").status(), StatusCode::OK);
    }

    #[test]
    fn head_is_answered_as_get_and_metrics_are_openmetrics() {
        let stub = Stub::default();
        assert_eq!(respond(&stub, &Method::HEAD, "/healthz").status(), StatusCode::OK);
        assert_eq!(respond(&stub, &Method::GET, "/metrics").headers()[header::CONTENT_TYPE], OPENMETRICS);
    }
}
