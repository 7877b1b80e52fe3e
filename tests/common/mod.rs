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

/// The verifier in forward-auth mode on loopback, reading `keys`: what the real-proxy tests put
/// behind nginx and Caddy.
pub fn forward_auth_config(keys: &KubeletDir) -> keyward::verifier::Config {
    keyward::verifier::Config {
        keyset_dirs: vec![keys.path.clone()],
        watch_keyset: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        upstream: None,
        routes: None,
        poll_interval: Duration::from_secs(1),
        header_read_timeout: Duration::from_secs(10),
        upstream_timeout: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(1),
        workers: 1,
        hardening: keyward::verifier::Hardening::default(),
        usage: None,
        audit: None,
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A plain HTTP/1.1 client of a proxy listening on `addr`.
pub struct Front {
    pub addr: SocketAddr,
    client: hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<bytes::Bytes>>,
}

impl Front {
    pub fn new(addr: SocketAddr) -> Front {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        Front { addr, client }
    }

    /// One request; the response head and its whole body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: Vec<(&str, String)>,
    ) -> Result<(http::response::Parts, bytes::Bytes), BoxError> {
        let mut builder = Request::builder().method(method).uri(format!("http://{}{path}", self.addr));
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let response = self.client.request(builder.body(Full::default())?).await?;
        let (parts, body) = response.into_parts();
        Ok((parts, body.collect().await?.to_bytes()))
    }

    /// Waits (bounded: a minute, tries 10 ms apart) until `GET path` with `headers` answers 200.
    pub async fn wait_for_ok(&self, path: &str, headers: &[(&str, String)]) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::time::Instant::now() < deadline {
            if let Ok((parts, _)) = self.send("GET", path, headers.to_vec()).await
                && parts.status == http::StatusCode::OK
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

/// Method, path, request headers, expected status: one row of a proxy test's table.
pub type Case<'a> = (&'a str, &'a str, Vec<(&'a str, String)>, http::StatusCode);

/// A child process (a proxy under test), killed and reaped when the test ends, passed or not.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub mod forward_auth;
