//! An in-memory Kubernetes API for tests and the demo: kube-fake-client plus the watch it lacks.
//!
//! kube-fake-client serves get, list and writes but not watch, so the real
//! kube-runtime `Controller` cannot run on it alone. [`FakeCluster`] wraps it in a
//! small service that turns every successful write into a watch event
//! (`MODIFIED`, or `DELETED` for deletes) and serves `?watch=true` requests
//! from them, replaying what happened after the `resourceVersion` the watcher
//! asks for. List responses carry that event sequence number as their
//! `resourceVersion`, so list-then-watch loses nothing. Watch streams end when
//! a watcher falls too far behind (it then re-lists, as against a real server).
//!
//! Lists are paged when asked (`limit`, `continue`), in name order, each list
//! one snapshot (the rest is kept until read; at most `PAGED_LISTS`
//! unfinished lists, older tokens answer 410 Gone), and a request that
//! accepts `PartialObjectMetadata` (kube's `metadata_watcher`) gets metadata
//! only, in lists and watch events, as from a real server.
//! [`server`] answers HTTP requests with the same service (`keyward fake-apiserver`).
//!
//! Known differences from an API server: cascade deletes of owned objects
//! produce no events; `ADDED` is reported as `MODIFIED` (watchers treat both
//! as an apply); label selectors support `key=value` terms only.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{StreamExt, stream};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use keyward_api::ApiKey;

pub mod server;

/// Errors inside response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response the in-memory API sends.
pub type ResponseBody = BoxBody<Bytes, BoxError>;

/// Events kept for replay to watchers that start from an older version.
const HISTORY: usize = 50_000;

/// The one way to build an in-memory cluster: kube-fake-client with the ApiKey
/// resource (and its status subresource) registered, behind the watch layer.
///
/// ```no_run
/// # async fn f() -> Result<(), kube_fake_client::Error> {
/// let client = keyward_testkit::fakeapi::FakeCluster::new().with_crd().client().await?;
/// # Ok(()) }
/// ```
pub struct FakeCluster {
    builder: kube_fake_client::ClientBuilder,
}

impl Default for FakeCluster {
    fn default() -> FakeCluster {
        FakeCluster::new()
    }
}

impl FakeCluster {
    /// An empty cluster serving ApiKeys and their status subresource (the CRD object itself is not installed).
    #[must_use]
    pub fn new() -> FakeCluster {
        FakeCluster {
            builder: kube_fake_client::ClientBuilder::new()
                .with_resource::<ApiKey>()
                .with_status_subresource::<ApiKey>(),
        }
    }

    /// Install the ApiKey CustomResourceDefinition, as `kubectl apply` of `keyward crd` would.
    #[must_use]
    pub fn with_crd(mut self) -> FakeCluster {
        self.builder = self.builder.with_object(keyward_api::crd());
        self
    }

    /// Store `object` from the start.
    #[must_use]
    pub fn with_object<K: kube::Resource + serde::Serialize>(mut self, object: K) -> FakeCluster {
        self.builder = self.builder.with_object(object);
        self
    }

    /// Intercept requests (fail, count or delay them) before the in-memory store answers.
    #[must_use]
    pub fn with_interceptor_funcs(mut self, funcs: kube_fake_client::interceptor::Funcs) -> FakeCluster {
        self.builder = self.builder.with_interceptor_funcs(funcs);
        self
    }

    /// The watch layer as a service, for serving over HTTP ([`server`]).
    pub async fn service(self) -> Result<WatchService, kube_fake_client::Error> {
        Ok(WatchService::new(self.builder.build().await?))
    }

    /// A `kube::Client` without the watch layer, for tests that call reconcile directly and never watch.
    pub async fn plain_client(self) -> Result<kube::Client, kube_fake_client::Error> {
        self.builder.build().await
    }

    /// A `kube::Client` talking to the cluster in process.
    pub async fn client(self) -> Result<kube::Client, kube_fake_client::Error> {
        Ok(kube::Client::new(self.service().await?, "default"))
    }
}

/// An empty cluster's client: [`FakeCluster::new`] without the CRD object.
pub async fn client() -> Result<kube::Client, kube_fake_client::Error> {
    FakeCluster::new().client().await
}

/// The watch layer as a tower service, for serving it other than through a `kube::Client`.
#[derive(Clone)]
pub struct WatchService {
    inner: kube::Client,
    state: Arc<State>,
    /// End watch streams after the `timeoutSeconds` asked for, as a real server does.
    timeouts: bool,
}

impl WatchService {
    /// Put the watch layer in front of any kube-fake-client `Client`.
    #[must_use]
    pub fn new(inner: kube::Client) -> WatchService {
        let (tx, _) = broadcast::channel(4096);
        let state = Arc::new(State {
            log: Mutex::new(Log { seq: 0, history: VecDeque::new() }),
            tx,
            pages: Mutex::new(Pages::default()),
        });
        WatchService { inner, state, timeouts: false }
    }

    /// End each watch stream after the `timeoutSeconds` its client asked for (the client then
    /// watches again from its last version). Off by default: in-process tests run on a paused
    /// clock, which would end every idle watch at once.
    #[must_use]
    pub fn ending_watches_on_timeout(mut self) -> WatchService {
        self.timeouts = true;
        self
    }
}

struct State {
    log: Mutex<Log>,
    tx: broadcast::Sender<Arc<WatchEvent>>,
    pages: Mutex<Pages>,
}

/// Lists cut into pages: the rest of each, by continue token, until it is read.
#[derive(Default)]
struct Pages {
    issued: u64,
    waiting: VecDeque<(String, Rest)>,
}

/// What is left of a paged list: its version, kind and the items not yet returned.
struct Rest {
    version: u64,
    api_version: Value,
    kind: Value,
    items: Vec<Value>,
}

/// Lists left unfinished that are kept for their next page; older ones expire (410, as on a real server).
const PAGED_LISTS: usize = 64;

struct Log {
    seq: u64,
    history: VecDeque<Arc<WatchEvent>>,
}

/// One change, tagged with where it belongs.
struct WatchEvent {
    seq: u64,
    resource: Target,
    line: Bytes,
    labels: serde_json::Map<String, Value>,
}

/// A collection: API prefix (`api/v1`, `apis/g/v`), resource plural and namespace.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Target {
    prefix: String,
    resource: String,
    namespace: Option<String>,
}

impl Target {
    /// Parse `/api/v1[/namespaces/ns]/res[/name[/sub]]` or the `/apis/g/v/...` form.
    fn parse(path: &str) -> Option<(Target, Option<String>)> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (prefix, rest) = match *parts.first()? {
            "api" => (parts.get(..2)?.join("/"), parts.get(2..)?),
            "apis" => (parts.get(..3)?.join("/"), parts.get(3..)?),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
            _ => (None, rest),
        };
        let resource = (*rest.first()?).to_owned();
        let name = rest.get(1).map(|n| (*n).to_owned());
        Some((Target { prefix, resource, namespace }, name))
    }

    /// Whether an event on `other` (always namespaced or not) is seen by a watch on `self`.
    fn covers(&self, other: &Target) -> bool {
        self.prefix == other.prefix
            && self.resource == other.resource
            && (self.namespace.is_none() || self.namespace == other.namespace)
    }
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn decode(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(b) = hex {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `key=value` terms of a label selector; other forms match nothing, to be safe.
fn selector_matches(selector: Option<&str>, labels: &serde_json::Map<String, Value>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else { return true };
    selector.split(',').all(|term| match term.split_once('=') {
        Some((k, v)) => labels.get(k.trim_end_matches('=')).and_then(Value::as_str) == Some(v.trim_start_matches('=')),
        None => labels.contains_key(term),
    })
}

impl State {
    fn emit(&self, resource: Target, type_: &str, mut object: Value) {
        let mut log = self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        log.seq += 1;
        let seq = log.seq;
        // Watchers resume from the version of the last object they saw: make it our sequence.
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".to_owned(), Value::String(seq.to_string()));
        }
        let labels = object.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default();
        let mut line = json!({ "type": type_, "object": object }).to_string().into_bytes();
        line.push(b'\n');
        let event = Arc::new(WatchEvent { seq, resource, line: Bytes::from(line), labels });
        log.history.push_back(event.clone());
        if log.history.len() > HISTORY {
            log.history.pop_front();
        }
        // No receivers is fine: nobody is watching yet.
        let _ = self.tx.send(event);
    }

    fn current(&self) -> u64 {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).seq
    }
}

/// Whether the client asked for `PartialObjectMetadata` (kube's `metadata_watcher` does).
fn wants_metadata_only(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("as=PartialObjectMetadata")))
}

/// An object as a metadata-only request sees it.
fn metadata_only(object: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// Where an object sorts in a paged list: namespace, then name.
fn list_position(object: &Value) -> (String, String) {
    let field = |f: &str| object.pointer(&format!("/metadata/{f}")).and_then(Value::as_str).unwrap_or("").to_owned();
    (field("namespace"), field("name"))
}

impl State {
    /// Keep the rest of a list for its next page; the token to ask for it.
    fn keep(&self, rest: Rest) -> String {
        let mut pages = self.pages.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pages.issued += 1;
        let token = format!("{}-{}", rest.version, pages.issued);
        pages.waiting.push_back((token.clone(), rest));
        if pages.waiting.len() > PAGED_LISTS {
            pages.waiting.pop_front();
        }
        token
    }

    /// The rest of a list, once.
    fn resume(&self, token: &str) -> Option<Rest> {
        let mut pages = self.pages.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let at = pages.waiting.iter().position(|(t, _)| t == token)?;
        pages.waiting.remove(at).map(|(_, rest)| rest)
    }

    /// Cut one page off a list, keeping the rest; metadata only if asked.
    fn page(&self, list: &mut Value, limit: Option<usize>, version: u64, metadata: bool) {
        let mut next = None;
        if let Some(items) = list.get_mut("items").and_then(Value::as_array_mut) {
            items.sort_by_cached_key(list_position);
            if let Some(limit) = limit.filter(|l| items.len() > *l) {
                let rest = items.split_off(limit);
                let (api_version, kind) = (list["apiVersion"].clone(), list["kind"].clone());
                next = Some(self.keep(Rest { version, api_version, kind, items: rest }));
            }
        }
        if metadata {
            if let Some(items) = list.get_mut("items").and_then(Value::as_array_mut) {
                for item in items.iter_mut() {
                    *item = metadata_only(item);
                }
            }
            list["apiVersion"] = json!("meta.k8s.io/v1");
            list["kind"] = json!("PartialObjectMetadataList");
        }
        list["metadata"]["resourceVersion"] = Value::String(version.to_string());
        if let Some(token) = next {
            list["metadata"]["continue"] = Value::String(token);
        }
    }
}

fn full(bytes: Bytes) -> ResponseBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn respond(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

fn gone(message: &str) -> Response<ResponseBody> {
    let gone =
        json!({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Expired","code":410,"message":message});
    respond(StatusCode::GONE, Bytes::from(gone.to_string()))
}

impl WatchService {
    fn watch(&self, target: Target, query: &str, metadata: bool) -> Response<ResponseBody> {
        let selector = query_param(query, "labelSelector").map(decode);
        let from: u64 =
            query_param(query, "resourceVersion").and_then(|v| v.parse().ok()).unwrap_or_else(|| self.state.current());
        let (replay, rx) = {
            let log = self.state.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let oldest = log.history.front().map_or(log.seq + 1, |e| e.seq);
            if from + 1 < oldest {
                let gone = json!({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Expired","code":410,"message":"too old resource version"});
                return respond(StatusCode::GONE, Bytes::from(gone.to_string()));
            }
            let replay: Vec<Arc<WatchEvent>> = log.history.iter().filter(|e| e.seq > from).cloned().collect();
            (replay, self.state.tx.subscribe())
        };
        let live = stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(event) => Some((event, rx)),
                // A lagging watcher ends its stream and re-lists, as with a real server.
                Err(_) => None,
            }
        });
        let timeout_seconds =
            query_param(query, "timeoutSeconds").and_then(|t| t.parse().ok()).filter(|_| self.timeouts);
        let timeout = async move {
            match timeout_seconds {
                Some(seconds) => tokio::time::sleep(std::time::Duration::from_secs(seconds)).await,
                None => std::future::pending().await,
            }
        };
        let events = stream::iter(replay).chain(live).take_until(timeout).filter(move |e| {
            let keep = target.covers(&e.resource) && selector_matches(selector.as_deref(), &e.labels);
            async move { keep }
        });
        let body = StreamBody::new(events.map(move |e| {
            let bytes = if metadata { metadata_line(&e.line) } else { e.line.clone() };
            Ok::<_, BoxError>(Frame::data(bytes))
        }));
        let mut response = Response::new(BodyExt::boxed(body));
        response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        response
    }
}

/// A watch event line with its object reduced to metadata.
fn metadata_line(line: &Bytes) -> Bytes {
    let Ok(mut event) = serde_json::from_slice::<Value>(line) else { return line.clone() };
    event["object"] = metadata_only(&event["object"]);
    let mut out = event.to_string().into_bytes();
    out.push(b'\n');
    Bytes::from(out)
}

impl tower::Service<Request<Body>> for WatchService {
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            let query = req.uri().query().unwrap_or("").to_owned();
            let method = req.method().clone();
            let target = Target::parse(&path);
            let metadata = wants_metadata_only(req.headers());
            if method == http::Method::GET && matches!(query_param(&query, "watch"), Some("true" | "1")) {
                let (target, _) = target.ok_or("watch on an unknown path")?;
                return Ok(this.watch(target, &query, metadata));
            }
            let is_list = method == http::Method::GET && target.as_ref().is_some_and(|(_, name)| name.is_none());
            let limit = query_param(&query, "limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0);
            if is_list && let Some(token) = query_param(&query, "continue").map(decode) {
                // The next page of a list begun earlier: one snapshot, as on a real server.
                let Some(rest) = this.state.resume(&token) else {
                    return Ok(gone("the continue token has expired; list again"));
                };
                let mut list =
                    json!({"apiVersion": rest.api_version, "kind": rest.kind, "metadata": {}, "items": rest.items});
                this.state.page(&mut list, limit, rest.version, metadata);
                return Ok(respond(StatusCode::OK, Bytes::from(list.to_string())));
            }
            if is_list {
                // kube-fake-client would truncate at `limit` without a way on: page here instead.
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|kv| !kv.starts_with("limit=") && !kv.starts_with("continue=") && !kv.is_empty())
                    .collect();
                let uri = if kept.is_empty() { path.clone() } else { format!("{path}?{}", kept.join("&")) };
                *req.uri_mut() = uri.parse()?;
            }
            let version = this.state.current();
            let response = this.inner.send(req).await?;
            let (parts, body) = response.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let ok = parts.status.is_success();
            let mut bytes = bytes;
            if ok && is_list {
                if let Ok(mut list) = serde_json::from_slice::<Value>(&bytes) {
                    this.state.page(&mut list, limit, version, metadata);
                    bytes = Bytes::from(list.to_string());
                }
            } else if ok && metadata && method == http::Method::GET {
                if let Ok(object) = serde_json::from_slice::<Value>(&bytes) {
                    bytes = Bytes::from(metadata_only(&object).to_string());
                }
            } else if ok
                && method != http::Method::GET
                && let (Some((mut target, _)), Ok(object)) = (target, serde_json::from_slice::<Value>(&bytes))
                && object.get("kind").and_then(Value::as_str) != Some("Status")
            {
                if target.namespace.is_none() {
                    target.namespace = object.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_owned);
                }
                let type_ = if method == http::Method::DELETE { "DELETED" } else { "MODIFIED" };
                this.state.emit(target, type_, object);
            }
            Ok(Response::from_parts(parts, full(bytes)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_collection() {
        let (t, name) = Target::parse("/apis/keyward.dev/v1alpha1/namespaces/a/apikeys/crm/status").unwrap();
        assert_eq!(
            t,
            Target {
                prefix: "apis/keyward.dev/v1alpha1".into(),
                resource: "apikeys".into(),
                namespace: Some("a".into())
            }
        );
        assert_eq!(name.as_deref(), Some("crm"));
        let (all, name) = Target::parse("/api/v1/secrets").unwrap();
        assert_eq!((all.namespace, name), (None, None));
    }

    #[test]
    fn label_selectors_match_equality_terms() {
        let labels = json!({"a": "1", "b": "2"}).as_object().unwrap().clone();
        assert!(selector_matches(Some("a=1,b=2"), &labels));
        assert!(!selector_matches(Some("a=2"), &labels));
        assert!(selector_matches(Some(&decode("a%3D1")), &labels));
    }
}
