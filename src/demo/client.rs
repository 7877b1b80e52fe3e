//! Requests the walkthrough sends to the verifier, as a client workload would.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::token::Token;

/// What came back, reduced to what the walkthrough checks and prints.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// The verifier's machine-readable reason (`allowed` when the upstream answered).
    pub reason: String,
    /// The key id the upstream was told, when the request reached it.
    pub upstream_key_id: Option<String>,
    /// Whether the upstream saw an `Authorization` header (it must not).
    pub upstream_saw_authorization: bool,
    /// `Retry-After`, on 429.
    pub retry_after: Option<String>,
}

/// An HTTP client pointed at one verifier.
pub struct Caller {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

/// How a request authenticates.
pub enum Credential<'a> {
    /// No `Authorization` header.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(&'a Token),
    /// A raw `Authorization` value, for malformed cases.
    Raw(&'a str),
}

impl Caller {
    /// A client for the verifier at `addr`.
    ///
    /// Every request gets a connection of its own (no idle connection is kept): the verifier
    /// closes a keep-alive connection once it has waited its header read timeout (5 s in the
    /// demo) for the next request, counted from the previous answer, and a request sent on a
    /// connection the server is closing at that moment fails with "connection closed before
    /// message completed". On a loaded machine the demo's own process can stall past that
    /// timeout between an answer and its next request, so no reuse window is short enough.
    /// On a new connection the request is on its way before the server starts waiting, and the
    /// server reads what has arrived before it looks at its timer.
    #[must_use]
    pub fn new(addr: SocketAddr) -> Caller {
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build_http();
        Caller { client, base: format!("http://{addr}") }
    }

    /// Send `method path` with `credential`.
    pub async fn send(&self, method: &str, path: &str, credential: &Credential<'_>) -> anyhow::Result<Answer> {
        let mut request = hyper::Request::builder().method(method).uri(format!("{}{path}", self.base));
        match credential {
            Credential::None => {}
            Credential::Bearer(token) => {
                request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {}", token.expose()));
            }
            Credential::Raw(value) => request = request.header(hyper::header::AUTHORIZATION, *value),
        }
        let response = self.client.request(request.body(Full::new(Bytes::new()))?).await?;
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get(hyper::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.into_body().collect().await?.to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let from_upstream = json.get("sawAuthorization").is_some();
        Ok(Answer {
            status,
            reason: if from_upstream {
                "allowed".to_owned()
            } else {
                json.get("reason").and_then(|r| r.as_str()).unwrap_or("").to_owned()
            },
            upstream_key_id: json.get("keyId").and_then(|k| k.as_str()).map(str::to_owned),
            upstream_saw_authorization: json
                .get("sawAuthorization")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
            retry_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hyper_util::rt::TokioIo;

    use super::*;

    /// A keep-alive HTTP/1.1 server answering 200 to everything; how many connections it accepted.
    async fn counting_server() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(|_| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"{}"))))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (addr, accepted)
    }

    // What keeps a request off a keep-alive connection the verifier is closing after its
    // header read timeout, however long the demo's process stalls between two requests.
    #[tokio::test]
    async fn every_request_goes_on_a_connection_of_its_own() {
        let (addr, accepted) = counting_server().await;
        let caller = Caller::new(addr);
        for _ in 0..3 {
            assert_eq!(caller.send("GET", "/", &Credential::None).await.unwrap().status, 200);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3, "a server that keeps connections alive saw one per request");
    }
}
