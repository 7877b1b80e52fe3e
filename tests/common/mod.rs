//! Helpers shared by the verifier's black-box tests: the test kit's fixtures and
//! kubelet-style directories, the verifier's fixed "now", and a small upstream.

#![allow(dead_code, unused_imports, clippy::missing_panics_doc)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use keyward::verifier::decision::Now;
pub use keyward_testkit::fixtures::*;
pub use keyward_testkit::kubelet::KubeletDir;

/// Noon on 2026-11-22 ([`NOW`]), 1000 s into the process.
pub fn now() -> Now {
    Now { wall: time(NOW), monotonic: std::time::Duration::from_secs(1000) }
}

/// What the test upstream saw of one request.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
}

/// A small upstream: echoes what it saw as JSON in a header, and the request body as the response body.
pub struct Upstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
}

pub async fn upstream(delay: Duration) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (conns, reqs) = (Arc::clone(&connections), Arc::clone(&requests));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            conns.fetch_add(1, Ordering::SeqCst);
            let reqs = Arc::clone(&reqs);
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                reqs.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(delay).await;
                    let (parts, body) = request.into_parts();
                    let body = body.collect().await.unwrap().to_bytes();
                    let seen = Seen {
                        method: parts.method.to_string(),
                        uri: parts.uri.to_string(),
                        headers: parts
                            .headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
                            .collect(),
                        body_len: body.len(),
                    };
                    let response = Response::builder()
                        .header("x-seen", serde_json::to_string(&seen).unwrap())
                        .header("x-app", "yes")
                        .body(Full::new(body))
                        .unwrap();
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    Upstream { addr, connections, requests }
}
