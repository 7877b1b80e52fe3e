//! Requests the walkthrough sends to the verifier, as a client workload would.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

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

/// How long an idle pooled connection to the verifier is kept: well below the verifier's header
/// read timeout, which also closes idle keep-alive connections.
const POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

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
    /// A pooled connection is reused only within [`POOL_IDLE`]: the verifier closes a keep-alive
    /// connection idle for its header read timeout (5 s in the demo), and a request sent on a
    /// connection the server is closing at that moment fails with "connection closed before
    /// message completed". The demo waits between steps for longer than that.
    #[must_use]
    pub fn new(addr: SocketAddr) -> Caller {
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build_http();
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
