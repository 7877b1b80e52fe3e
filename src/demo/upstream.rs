//! The demo's stand-in for the API behind the verifier: it answers every
//! request with what it was told about the caller, so the walkthrough can
//! show that the verifier passed the key id and scopes on and kept the token.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serve on an ephemeral loopback port until the task is dropped; returns the address.
pub async fn start() -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(answer);
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok((addr, task))
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = serde_json::json!({
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "keyId": header("x-keyward-key-id"),
        "scopes": header("x-keyward-scopes"),
        "sawAuthorization": request.headers().contains_key(hyper::header::AUTHORIZATION),
    });
    Ok(Response::builder()
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a static response is valid"))
}
