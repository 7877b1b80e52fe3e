//! The request handler of the main listener: forward-auth (`/verify`) or reverse proxy to `--upstream`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONNECTION, HOST};
use http::{HeaderMap, HeaderName, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::audit::{AuditLog, Facts};
use super::clock::Clock;
use super::decision::{Decision, Outcome, decide};
use super::index::KeyIndex;
use super::loader::KeyStore;
use super::metrics::{ClientErrorLabel, Metrics, UpstreamLabel};
use super::respond::{self, Body, BoxError, KEY_ID_HEADER, SCOPES_HEADER};
use super::routes::Routes;

/// The path forward-auth requests are sent to; `/verify/<original path>` also works (Envoy ext_authz).
pub const VERIFY_PATH: &str = "/verify";

/// Headers a proxy sets to describe the original request, in pairs (method, URI): Traefik, then nginx.
const ORIGINAL_METHOD: [&str; 2] = ["x-forwarded-method", "x-original-method"];
const ORIGINAL_URI: [&str; 2] = ["x-forwarded-uri", "x-original-uri"];

/// Headers that belong to one connection and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// Why an upstream URL was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The URL does not parse.
    #[error("upstream URL does not parse: {0}")]
    Parse(#[from] http::uri::InvalidUri),
    /// The URL is not `http://host:port` with no path: the upstream sits in the same pod and speaks plain HTTP.
    #[error("upstream must be http://host[:port] with no path, query or credentials")]
    Unsupported,
}

/// Where allowed requests go in proxy mode.
#[derive(Debug, Clone)]
pub struct Upstream {
    authority: http::uri::Authority,
    client: Client<HttpConnector, Body>,
    timeout: Duration,
}

impl Upstream {
    /// An upstream at `url` (`http://host:port`), waiting at most `timeout` for response headers.
    pub fn new(url: &str, timeout: Duration) -> Result<Upstream, UpstreamError> {
        let uri: Uri = url.parse()?;
        let path_ok = uri.path_and_query().is_none_or(|pq| pq.as_str() == "/" || pq.as_str().is_empty());
        let authority = match (uri.scheme_str(), uri.authority()) {
            (Some("http"), Some(a)) if path_ok && !a.as_str().contains('@') => a.clone(),
            _ => return Err(UpstreamError::Unsupported),
        };
        Ok(Upstream { authority, client: pool(timeout), timeout })
    }

    /// The same upstream with a connection pool of its own (for another serving thread).
    #[must_use]
    pub fn with_own_pool(&self) -> Upstream {
        Upstream { authority: self.authority.clone(), client: pool(self.timeout), timeout: self.timeout }
    }
}

/// An empty pool of keep-alive connections; connections run on the runtime that opens them.
fn pool(timeout: Duration) -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(timeout));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Everything the main listener needs to answer a request.
pub struct Verifier {
    store: Arc<KeyStore>,
    routes: Routes,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    upstream: Option<Upstream>,
    audit: Option<AuditLog>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("routes", &self.routes)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier answering from `store`; a proxy when `upstream` is set, forward-auth otherwise.
    #[must_use]
    pub fn new(
        store: Arc<KeyStore>,
        routes: Routes,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        upstream: Option<Upstream>,
    ) -> Verifier {
        Verifier { store, routes, metrics, clock, upstream, audit: None }
    }

    /// The same verifier, writing an audit line for every request it answers.
    #[must_use]
    pub fn with_audit(self, audit: Option<AuditLog>) -> Verifier {
        Verifier { audit, ..self }
    }

    /// A verifier sharing this one's key store, routes, metrics and clock, with
    /// an upstream connection pool of its own: one per serving thread.
    #[must_use]
    pub fn for_worker(&self) -> Verifier {
        Verifier {
            store: Arc::clone(&self.store),
            routes: self.routes.clone(),
            metrics: Arc::clone(&self.metrics),
            clock: Arc::clone(&self.clock),
            upstream: self.upstream.as_ref().map(Upstream::with_own_pool),
            audit: self.audit.clone(),
        }
    }

    /// Answer one request.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.handle_from(request, None).await
    }

    /// Answer one request from `client`, the peer address the audit log names.
    pub async fn handle_from<B>(&self, request: Request<B>, client: Option<SocketAddr>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let Some(audit) = &self.audit else {
            return self.answer(request, started, None).await;
        };
        let head = audit.head(request.headers(), self.clock.now().wall, started, client);
        let mut facts = Facts::default();
        let response = self.answer(request, started, Some(&mut facts)).await;
        audit.answered(facts, response.status().as_u16(), head);
        response
    }

    async fn answer<B>(&self, request: Request<B>, started: Instant, facts: Option<&mut Facts>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Some(index) = self.store.current() else {
            self.metrics.count_not_ready();
            if let Some(facts) = facts {
                facts.undecided(&request, super::metrics::NOT_READY);
            }
            return respond::not_ready();
        };
        match &self.upstream {
            None => {
                let response = self.forward_auth(&index, &request, started, facts);
                drop(request);
                response
            }
            Some(upstream) => self.proxy(index, upstream, request, started, facts).await,
        }
    }

    fn record(&self, decision: &Decision<'_>, started: Instant) {
        self.metrics.count(decision.outcome);
        self.metrics.decision_seconds.observe(started.elapsed().as_secs_f64());
        // Only the outcome and the key id: the request line may hold secrets in its query.
        tracing::debug!(
            outcome = decision.outcome.as_str(),
            key_id = %decision.key_id().map(|k| k.to_string()).unwrap_or_default(),
            "decision"
        );
    }

    fn forward_auth<B>(
        &self,
        index: &KeyIndex,
        request: &Request<B>,
        started: Instant,
        facts: Option<&mut Facts>,
    ) -> Response<Body> {
        let path = request.uri().path();
        let suffix = match path.strip_prefix(VERIFY_PATH) {
            Some("") => None,
            Some(rest) if rest.starts_with('/') => Some(rest),
            _ => {
                if let Some(facts) = facts {
                    facts.undecided(request, "not_found");
                }
                return respond::error(StatusCode::NOT_FOUND, "not_found");
            }
        };
        // An Envoy-style `/verify/<path>` carries the original method and path itself.
        let native = suffix.map(|rest| {
            let uri = match request.uri().query() {
                Some(q) => format!("{rest}?{q}"),
                None => rest.to_owned(),
            };
            (request.method().as_str().to_owned(), uri)
        });
        let (method, uri) = original_request(request.headers(), native).unwrap_or_default();
        let authorization = request.headers().get_all(AUTHORIZATION).iter().map(http::HeaderValue::as_bytes);
        let now = self.clock.now();
        let decision =
            decide(index, &self.routes, super::decision::Request { method: &method, uri: &uri, authorization }, now);
        self.record(&decision, started);
        if let Some(facts) = facts {
            facts.decided(method, uri, &decision);
        }
        match (decision.outcome, decision.entry) {
            (Outcome::Allowed, Some(entry)) => respond::allowed(&entry),
            _ => respond::denied(&decision),
        }
    }

    async fn proxy<B>(
        &self,
        index: Arc<KeyIndex>,
        upstream: &Upstream,
        request: Request<B>,
        started: Instant,
        mut facts: Option<&mut Facts>,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (mut parts, body) = request.into_parts();
        let path_and_query = parts.uri.path_and_query().map_or("/", http::uri::PathAndQuery::as_str).to_owned();
        let decision = {
            let authorization = parts.headers.get_all(AUTHORIZATION).iter().map(http::HeaderValue::as_bytes);
            let method = parts.method.as_str();
            decide(
                &index,
                &self.routes,
                super::decision::Request { method, uri: &path_and_query, authorization },
                self.clock.now(),
            )
        };
        self.record(&decision, started);
        if let Some(facts) = facts.as_deref_mut() {
            facts.decided(parts.method.as_str().to_owned(), path_and_query.clone(), &decision);
        }
        let (Outcome::Allowed, Some(entry)) = (decision.outcome, decision.entry) else {
            return respond::denied(&decision);
        };

        let Ok(uri) =
            Uri::builder().scheme("http").authority(upstream.authority.clone()).path_and_query(path_and_query).build()
        else {
            note(facts, "invalid_request");
            return respond::error(StatusCode::BAD_REQUEST, "invalid_request");
        };
        parts.uri = uri;
        // The upstream speaks its own HTTP version; the client gets the one it asked in.
        let client_version = parts.version;
        parts.version = http::Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(AUTHORIZATION);
        respond::add_key_headers(&mut parts.headers, &entry);
        // Let go of the index before waiting on the upstream, so a reload can free the old one.
        drop(index);
        if !parts.headers.contains_key(HOST) {
            // Keep the client's Host when there is one: the app may route on it.
            if let Ok(host) = http::HeaderValue::from_str(upstream.authority.as_str()) {
                parts.headers.insert(HOST, host);
            }
        }
        // Notes whether the client's own body failed (a malformed chunk, a hang-up), which is no upstream fault.
        let client_failed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&client_failed);
        let body = body
            .map_err(move |err| {
                flag.store(true, Ordering::Relaxed);
                err.into()
            })
            .boxed_unsync();
        let forwarded = Request::from_parts(parts, body);

        match tokio::time::timeout(upstream.timeout, upstream.client.request(forwarded)).await {
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                // An HTTP/1.0 upstream must not turn an HTTP/1.1 client's answer into
                // HTTP/1.0 (which closes every kept-alive connection).
                parts.version = client_version;
                Response::from_parts(parts, body.map_err(Into::into).boxed_unsync())
            }
            Ok(Err(err)) if client_failed.load(Ordering::Relaxed) => {
                self.metrics.client_errors.get_or_create(&ClientErrorLabel { kind: "body" }).inc();
                note(facts, "client_body");
                // The client's mistake: debug, not warn, so no client can raise the upstream alarm.
                tracing::debug!(error = %err, "client request body failed; request abandoned");
                respond::error(StatusCode::BAD_REQUEST, "bad_request")
            }
            Ok(Err(err)) => {
                self.metrics.upstream_errors.get_or_create(&UpstreamLabel { kind: "unavailable" }).inc();
                note(facts, "upstream_unavailable");
                tracing::warn!(error = %err, "upstream request failed");
                respond::error(StatusCode::BAD_GATEWAY, "bad_gateway")
            }
            Err(_) => {
                self.metrics.upstream_errors.get_or_create(&UpstreamLabel { kind: "timeout" }).inc();
                note(facts, "upstream_timeout");
                tracing::warn!(timeout = ?upstream.timeout, "upstream did not answer in time");
                respond::error(StatusCode::GATEWAY_TIMEOUT, "gateway_timeout")
            }
        }
    }
}

/// Note why an allowed request was not answered by the upstream.
fn note(facts: Option<&mut Facts>, reason: &'static str) {
    if let Some(facts) = facts {
        facts.reason = reason;
    }
}

/// The method and URI of the original request, from the proxy's headers and/or the `/verify/<path>` form.
///
/// Every source present must agree and appear once: a client could add a
/// second one (nginx passes client headers on to the auth subrequest), and
/// the verifier must not pick the client's over the proxy's. `None` when the
/// sources disagree, repeat, or say nothing, which decides as an invalid request.
fn original_request(headers: &HeaderMap, native: Option<(String, String)>) -> Option<(String, String)> {
    let (native_method, native_uri) = native.map_or((None, None), |(m, u)| (Some(m), Some(u)));
    let method = agree(headers, &ORIGINAL_METHOD, native_method)?;
    let uri = agree(headers, &ORIGINAL_URI, native_uri)?;
    Some((method, uri))
}

fn agree(headers: &HeaderMap, names: &[&str], native: Option<String>) -> Option<String> {
    let mut found = native;
    for name in names {
        let mut values = headers.get_all(*name).iter();
        let Some(value) = values.next() else { continue };
        if values.next().is_some() {
            return None;
        }
        let value = value.to_str().ok()?;
        match &found {
            Some(existing) if existing != value => return None,
            Some(_) => {}
            None => found = Some(value.to_owned()),
        }
    }
    found
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    // Drop look-alikes of our own headers too (a client's X-Keyward-Key-Id must never reach the app).
    headers.remove(&KEY_ID_HEADER);
    headers.remove(&SCOPES_HEADER);
}
