//! An in-memory API server for tests and the demo: kube-fake-client's store behind a layer
//! that behaves as the real API server does for what keyward and its users touch.
//!
//! kube-fake-client stores objects and answers get, list and writes. [`WatchService`] puts in
//! front of it what an API server adds, held to the real one by the fake-vs-real scenarios
//! (`tests/fake_vs_real/scenarios.rs`, run on both by `tests/real_cluster/fake_vs_real.rs`):
//!
//! - **Watch.** Every successful write becomes a watch event (`ADDED`, `MODIFIED`,
//!   `DELETED`), served to `?watch=true` requests from the `resourceVersion` asked for; a
//!   watch without one (or from `"0"`) first sends `ADDED` for every object that exists.
//!   List responses carry the event sequence number as their `resourceVersion`, so
//!   list-then-watch loses nothing. Watch streams end when a watcher falls too far behind
//!   (it then re-lists, as against a real server). Label selectors (`key=value` terms) and
//!   `metadata.name`/`metadata.namespace` field selectors filter watches.
//! - **Writes** (`writes.rs`): finalizers (a DELETE marks `deletionTimestamp` and keeps the
//!   object until its finalizers are gone; none may be added meanwhile), `?dryRun=All`
//!   (answered, never stored), `metadata.generation` moving with the spec only (custom
//!   resources; none on core/v1 objects), a DELETE answering a `Status`, and ApiKeys pruned,
//!   defaulted and validated against the CRD's schema and CEL rules ([`admission`]), refused
//!   with `422 Invalid`.
//! - **Events** under both APIs, core/v1 and events.k8s.io/v1 ([`events`]), and
//!   **Namespaces** (`namespaces.rs`), which kube-fake-client cannot serve.
//! - **Lists** are paged when asked (`limit`, `continue`), in name order, each list one
//!   snapshot (the rest is kept until read; at most `PAGED_LISTS` unfinished lists, older
//!   tokens answer 410 Gone), and a request that accepts `PartialObjectMetadata` (kube's
//!   `metadata_watcher`) gets metadata only, in lists and watch events.
//! - Paths that are not a resource answer `404 NotFound` (discovery is [`discovery`]'s).
//!
//! [`server`] answers HTTP requests with the same service (`keyward fake-apiserver`).
//!
//! Known differences from an API server (docs/testing.md lists them all): objects deleted
//! with their owner (ownerReference cascade) go at once, and only Secrets and ConfigMaps
//! produce watch events; watch
//! events carry this layer's sequence number as `resourceVersion` while gets carry
//! kube-fake-client's; server-side apply knows ownership by applies only; namespaces need
//! not exist; no authentication or RBAC.

use std::collections::{HashMap, VecDeque};
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

use keyward_api::{ApiKey, KeySet};

pub mod admission;
mod apply;
pub mod discovery;
pub mod events;
mod namespaces;
pub mod server;
mod table;
mod writes;

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
    /// An empty cluster serving ApiKeys and ApiKeyWebhooks with their status subresources (the CRD objects
    /// themselves are not installed).
    #[must_use]
    pub fn new() -> FakeCluster {
        FakeCluster {
            builder: kube_fake_client::ClientBuilder::new()
                .with_resource::<ApiKey>()
                .with_status_subresource::<ApiKey>()
                .with_resource::<keyward_api::ApiKeyWebhook>()
                .with_status_subresource::<keyward_api::ApiKeyWebhook>()
                .with_resource::<keyward_api::ApiKeyClass>()
                .with_resource::<keyward_api::ClusterApiKey>()
                .with_status_subresource::<keyward_api::ClusterApiKey>()
                .with_resource::<KeySet>()
                .with_status_subresource::<KeySet>(),
        }
    }

    /// Install the ApiKey and KeySet CustomResourceDefinitions, as `kubectl apply` of `crds/` would.
    #[must_use]
    pub fn with_crd(mut self) -> FakeCluster {
        self.builder = self.builder.with_object(keyward_api::crd()).with_object(keyward_api::keyset_crd());
        self
    }

    /// Install the ApiKeyWebhook CustomResourceDefinition too: the operator then delivers webhook notices.
    #[must_use]
    pub fn with_webhook_crd(mut self) -> FakeCluster {
        self.builder = self.builder.with_object(keyward_api::webhook_crd());
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
    /// Only cluster-scoped ApiKeyClass paths are rewritten ([`CLUSTER_SCOPE_NAMESPACE`]).
    pub async fn plain_client(self) -> Result<kube::Client, kube_fake_client::Error> {
        Ok(kube::Client::new(ClusterScope(self.builder.build().await?), "default"))
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
            overlay: Mutex::new(HashMap::new()),
            namespaces: namespaces::Namespaces::default(),
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
    /// What the API server keeps in metadata that kube-fake-client cannot, by object uid.
    overlay: Mutex<HashMap<String, writes::Overlay>>,
    namespaces: namespaces::Namespaces,
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
    /// The object's namespace and name, for field selectors.
    namespace: String,
    name: String,
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

    /// The path of the collection, or of the object `name` in it.
    fn path(&self, name: Option<&str>) -> String {
        let namespace = self.namespace.as_ref().map(|ns| format!("/namespaces/{ns}")).unwrap_or_default();
        let name = name.map(|n| format!("/{n}")).unwrap_or_default();
        format!("/{}{namespace}/{}{name}", self.prefix, self.resource)
    }

    /// The API group (empty for core/v1).
    fn group(&self) -> &str {
        self.prefix.strip_prefix("apis/").and_then(|gv| gv.split('/').next()).unwrap_or("")
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
    /// Record a change and tell every watcher; an Event also under its other API.
    fn emit(&self, resource: Target, type_: &str, object: Value) {
        if let Some(other) = events::twin(&resource.prefix, &resource.resource) {
            let twin = Target { prefix: other.to_owned(), ..resource.clone() };
            self.emit_one(twin, type_, events::convert(&object, other));
        }
        self.emit_one(resource, type_, object);
    }

    fn emit_one(&self, resource: Target, type_: &str, mut object: Value) {
        let mut log = self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        log.seq += 1;
        let seq = log.seq;
        // Watchers resume from the version of the last object they saw: make it our sequence.
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".to_owned(), Value::String(seq.to_string()));
        }
        let labels = object.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default();
        let field =
            |f: &str| object.pointer(&format!("/metadata/{f}")).and_then(Value::as_str).unwrap_or("").to_owned();
        let (mut namespace, name) = (field("namespace"), field("name"));
        if namespace.is_empty() {
            namespace = resource.namespace.clone().unwrap_or_default();
        }
        if namespace == CLUSTER_SCOPE_NAMESPACE
            && let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut)
        {
            // Cluster-scoped objects have no namespace on a real server; only the store needs one.
            meta.remove("namespace");
        }
        let mut line = json!({ "type": type_, "object": object }).to_string().into_bytes();
        line.push(b'\n');
        let event = Arc::new(WatchEvent { seq, resource, line: Bytes::from(line), labels, namespace, name });
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

/// A Kubernetes `Status` failure, which kube clients turn into an API error.
fn status_failure(status: StatusCode, reason: &str, message: &str) -> Response<ResponseBody> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": status.as_u16()});
    respond(status, Bytes::from(body.to_string()))
}

/// A fresh object uid, in the API server's (UUID) form.
fn new_uid() -> String {
    let bits: u128 = rand::random();
    let hex = format!("{bits:032x}");
    format!("{}-{}-4{}-a{}-{}", &hex[..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..])
}

/// Whether a `fieldSelector` (`metadata.name=x`, `metadata.namespace=y` terms) admits an event.
fn fields_match(selector: Option<&str>, event: &WatchEvent) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else { return true };
    selector.split(',').all(|term| match term.split_once('=') {
        Some(("metadata.name", v)) => event.name == v.trim_start_matches('='),
        Some(("metadata.namespace", v)) => event.namespace == v.trim_start_matches('='),
        _ => true,
    })
}

impl WatchService {
    /// Send a request to kube-fake-client: its status and body.
    async fn inner(
        &self,
        method: http::Method,
        uri: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), BoxError> {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(content_type) = content_type {
            builder = builder.header(http::header::CONTENT_TYPE, content_type);
        }
        let response = self.inner.send(builder.body(Body::from(body))?).await?;
        let status = response.status();
        Ok((status, response.into_body().collect().await?.to_bytes()))
    }

    /// The stored object at `path`, as clients see it, if there is one.
    async fn stored(&self, target: &Target, name: &str) -> Result<Option<Value>, BoxError> {
        let (status, bytes) = self.inner(http::Method::GET, &target.path(Some(name)), None, Vec::new()).await?;
        if !status.is_success() {
            return Ok(None);
        }
        let mut object: Value = serde_json::from_slice(&bytes)?;
        self.state.decorate(target, &mut object);
        Ok(Some(object))
    }

    /// A list of the collection as clients see it (Events from both APIs), unpaged; or the
    /// store's refusal.
    async fn list(&self, target: &Target, query: &str) -> Result<Result<Value, Response<ResponseBody>>, BoxError> {
        if namespaces::is_namespaces(target) {
            // Not kube-fake-client's: the watch's label selector filters these events as it does live ones.
            return Ok(Ok(self.state.namespace_list(None)));
        }
        let twin = events::twin(&target.prefix, &target.resource);
        // Events are filtered by field here, after both APIs' Events are in one list (their
        // field names differ, and kube-fake-client knows few of them).
        let fields = query_param(query, "fieldSelector").map(decode).filter(|_| twin.is_some());
        let kept: Vec<&str> = query
            .split('&')
            .filter(|kv| kv.starts_with("labelSelector=") || (kv.starts_with("fieldSelector=") && twin.is_none()))
            .collect();
        let query = if kept.is_empty() { String::new() } else { format!("?{}", kept.join("&")) };
        let (status, bytes) =
            self.inner(http::Method::GET, &format!("{}{query}", target.path(None)), None, Vec::new()).await?;
        if !status.is_success() {
            return Ok(Err(respond(status, bytes)));
        }
        let mut list: Value = serde_json::from_slice(&bytes)?;
        if let Some(other) = twin {
            let twin = Target { prefix: other.to_owned(), ..target.clone() };
            let (status, bytes) =
                self.inner(http::Method::GET, &format!("{}{query}", twin.path(None)), None, Vec::new()).await?;
            if status.is_success()
                && let (Ok(theirs), Some(items)) =
                    (serde_json::from_slice::<Value>(&bytes), list.get_mut("items").and_then(Value::as_array_mut))
            {
                let converted = theirs["items"].as_array().into_iter().flatten();
                items.extend(converted.map(|event| events::convert(event, &target.prefix)));
                items.retain(|event| events::fields_match(fields.as_deref(), event));
            }
        }
        if let Some(items) = list.get_mut("items").and_then(Value::as_array_mut) {
            for item in items.iter_mut() {
                self.state.decorate(target, item);
            }
        }
        Ok(Ok(list))
    }

    /// What a watch from nothing starts with: the version it starts from, and an `ADDED`
    /// event for every object that exists.
    async fn initial(
        &self,
        target: &Target,
        query: &str,
    ) -> Result<Result<(u64, Vec<Arc<WatchEvent>>), Response<ResponseBody>>, BoxError> {
        let from = self.state.current();
        let items = match self.list(target, query).await? {
            Ok(mut list) => list.get_mut("items").map(Value::take).unwrap_or_default(),
            Err(refused) => return Ok(Err(refused)),
        };
        let initial = items
            .as_array()
            .into_iter()
            .flatten()
            .map(|object| {
                let mut object = object.clone();
                object["metadata"]["resourceVersion"] = Value::String(from.to_string());
                let field = |f: &str| {
                    object.pointer(&format!("/metadata/{f}")).and_then(Value::as_str).unwrap_or("").to_owned()
                };
                let (namespace, name) = (field("namespace"), field("name"));
                let labels = object.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default();
                let mut line = json!({"type": "ADDED", "object": object}).to_string().into_bytes();
                line.push(b'\n');
                Arc::new(WatchEvent {
                    seq: from,
                    resource: target.clone(),
                    line: Bytes::from(line),
                    labels,
                    namespace,
                    name,
                })
            })
            .collect();
        Ok(Ok((from, initial)))
    }

    async fn watch(&self, target: Target, query: &str, metadata: bool) -> Result<Response<ResponseBody>, BoxError> {
        let selector = query_param(query, "labelSelector").map(decode);
        let fields = query_param(query, "fieldSelector").map(decode);
        let asked = query_param(query, "resourceVersion").filter(|v| !v.is_empty() && *v != "0");
        // From nothing: what exists now, as ADDED, then every change after it (a change made
        // while listing may show twice, never not at all).
        let (from, initial) = if let Some(version) = asked {
            (version.parse().unwrap_or_else(|_| self.state.current()), Vec::new())
        } else {
            match self.initial(&target, query).await? {
                Ok(initial) => initial,
                Err(refused) => return Ok(refused),
            }
        };
        let (replay, rx) = {
            let log = self.state.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let oldest = log.history.front().map_or(log.seq + 1, |e| e.seq);
            if from + 1 < oldest {
                return Ok(gone("too old resource version"));
            }
            let replay: Vec<Arc<WatchEvent>> =
                initial.into_iter().chain(log.history.iter().filter(|e| e.seq > from).cloned()).collect();
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
            let keep = target.covers(&e.resource)
                && selector_matches(selector.as_deref(), &e.labels)
                && fields_match(fields.as_deref(), e);
            async move { keep }
        });
        let body = StreamBody::new(events.map(move |e| {
            let bytes = if metadata { metadata_line(&e.line) } else { e.line.clone() };
            Ok::<_, BoxError>(Frame::data(bytes))
        }));
        let mut response = Response::new(BodyExt::boxed(body));
        response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        Ok(response)
    }

    async fn read(
        &self,
        target: &Target,
        name: Option<&str>,
        path: &str,
        query: &str,
        shape: Shape,
    ) -> Result<Response<ResponseBody>, BoxError> {
        let Shape { metadata, table } = shape;
        let answer = |value: Value| {
            let value = if table { table::api_keys(&value, writes::now_timestamp()) } else { value };
            respond(StatusCode::OK, Bytes::from(value.to_string()))
        };
        let limit = query_param(query, "limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0);
        let Some(name) = name else {
            if let Some(token) = query_param(query, "continue").map(decode) {
                // The next page of a list begun earlier: one snapshot, as on a real server.
                let Some(rest) = self.state.resume(&token) else {
                    return Ok(gone("the continue token has expired; list again"));
                };
                let mut list =
                    json!({"apiVersion": rest.api_version, "kind": rest.kind, "metadata": {}, "items": rest.items});
                self.state.page(&mut list, limit, rest.version, metadata && !table);
                return Ok(answer(list));
            }
            let version = self.state.current();
            return Ok(match self.list(target, query).await? {
                Ok(mut list) => {
                    self.state.page(&mut list, limit, version, metadata && !table);
                    answer(list)
                }
                Err(refused) => refused,
            });
        };
        let (mut status, mut bytes) = self.inner(http::Method::GET, path, None, Vec::new()).await?;
        if status == StatusCode::NOT_FOUND
            && let Some(other) = events::twin(&target.prefix, &target.resource)
        {
            // An Event written through the other API.
            let twin = Target { prefix: other.to_owned(), ..target.clone() };
            let (their_status, theirs) =
                self.inner(http::Method::GET, &twin.path(Some(name)), None, Vec::new()).await?;
            if their_status.is_success() {
                let event: Value = serde_json::from_slice(&theirs)?;
                (status, bytes) = (their_status, Bytes::from(events::convert(&event, &target.prefix).to_string()));
            }
        }
        if status.is_success()
            && let Ok(mut object) = serde_json::from_slice::<Value>(&bytes)
        {
            self.state.decorate(target, &mut object);
            if table {
                return Ok(answer(object));
            }
            if metadata {
                object = metadata_only(&object);
            }
            bytes = Bytes::from(object.to_string());
        }
        Ok(respond(status, bytes))
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

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let path = cluster_scoped_stored(parts.uri.path());
            let query = parts.uri.query().unwrap_or("").to_owned();
            let method = parts.method.clone();
            let metadata = wants_metadata_only(&parts.headers);
            if let Some(answer) = discovery::answer(&method, &path) {
                return Ok(answer);
            }
            let Some((target, name)) = Target::parse(&path) else {
                return Ok(not_found(&path));
            };
            let body = body.collect().await?.to_bytes();
            // In the query, or (for a DELETE) in the DeleteOptions body.
            let dry_run = query_param(&query, "dryRun") == Some("All")
                || (method == http::Method::DELETE
                    && serde_json::from_slice::<Value>(&body)
                        .is_ok_and(|options| options["dryRun"].as_array().is_some_and(|d| d.contains(&json!("All")))));
            let watch = method == http::Method::GET && matches!(query_param(&query, "watch"), Some("true" | "1"));
            let selector = query_param(&query, "labelSelector").map(decode);
            if namespaces::is_namespaces(&target) && !(watch && name.is_none()) {
                return Ok(this.state.namespaces(
                    &method,
                    name.as_deref(),
                    &body,
                    dry_run,
                    &writes::now(),
                    selector.as_deref(),
                ));
            }
            if !serves(&target) && !namespaces::is_namespaces(&target) {
                return Ok(not_found(&path));
            }
            if watch {
                return this.watch(target, &query, metadata).await;
            }
            if method == http::Method::GET {
                let table = table::wanted(&parts.headers) && target.prefix == "apis/keyward.dev/v1alpha1";
                return this.read(&target, name.as_deref(), &path, &query, Shape { metadata, table }).await;
            }
            let content_type =
                parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
            if content_type.as_deref().is_some_and(|c| c.contains("protobuf")) {
                // kubectl's typed commands (`create namespace`, `create secret`) send protobuf.
                let message = "the in-memory API reads JSON only: use `kubectl apply -f` with YAML";
                return Ok(status_failure(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType", message));
            }
            let write = writes::Write {
                method,
                status: name.is_some() && path.ends_with("/status"),
                target,
                name,
                path,
                query,
                content_type,
                body,
                dry_run,
            };
            this.write(write).await
        })
    }
}

/// Where kube-fake-client keeps ApiKeyClasses and ClusterApiKeys: it holds every registered
/// custom resource in a namespace, so the cluster-scoped ones are stored in this one. Objects
/// read through the watch layer come without it, as from an API server; through
/// [`FakeCluster::plain_client`] they carry it as `metadata.namespace`.
pub const CLUSTER_SCOPE_NAMESPACE: &str = "keyward-fake-cluster-scope";

/// kube-fake-client behind nothing but the ApiKeyClass path rewrite ([`cluster_scoped_stored`])
/// and Namespaces, which kube-fake-client cannot serve: none exists (a GET answers 404).
#[derive(Clone)]
struct ClusterScope(kube::Client);

impl tower::Service<Request<Body>> for ClusterScope {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let client = self.0.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            if parts.method == http::Method::GET && parts.uri.path().starts_with("/api/v1/namespaces/") {
                let name = parts.uri.path().trim_start_matches("/api/v1/namespaces/");
                if !name.is_empty() && !name.contains('/') {
                    let status = json!({
                        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                        "message": format!("namespaces \"{name}\" not found"),
                    });
                    return Ok(Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .body(Body::from(status.to_string().into_bytes()))?);
                }
            }
            let path = cluster_scoped_stored(parts.uri.path());
            let uri = match parts.uri.query() {
                Some(query) => format!("{path}?{query}"),
                None => path,
            };
            parts.uri = uri.parse()?;
            Ok(client.send(Request::from_parts(parts, body)).await?)
        })
    }
}

/// `path` with a cluster-scoped ApiKeyClass path turned into the namespaced one it is stored under.
fn cluster_scoped_stored(path: &str) -> String {
    const GROUP: &str = "/apis/keyward.dev/v1alpha1/";
    for plural in CLUSTER_SCOPED {
        if let Some(rest) = path.strip_prefix(GROUP).and_then(|p| p.strip_prefix(plural))
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return format!("{GROUP}namespaces/{CLUSTER_SCOPE_NAMESPACE}/{plural}{rest}");
        }
    }
    path.to_owned()
}

/// keyward's cluster-scoped resources, stored under [`CLUSTER_SCOPE_NAMESPACE`].
const CLUSTER_SCOPED: [&str; 2] = ["apikeyclasses", "clusterapikeys"];

/// How a read is answered: whole objects, metadata only, or (ApiKeys for kubectl) a Table.
#[derive(Clone, Copy)]
struct Shape {
    metadata: bool,
    table: bool,
}

/// `404 NotFound` for a path that names no resource, as the API server answers.
fn not_found(path: &str) -> Response<ResponseBody> {
    status_failure(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("the server could not find the requested resource ({path})"),
    )
}

/// Whether kube-fake-client knows the resource (built in, or registered as the ApiKey is).
fn serves(target: &Target) -> bool {
    discovery::resource(&target.prefix, &target.resource).is_some()
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
