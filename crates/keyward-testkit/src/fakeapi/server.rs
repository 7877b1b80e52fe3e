//! The in-memory API over plain HTTP: what `keyward fake-apiserver` serves.
//!
//! [`cluster`] builds kube-fake-client with the ApiKey CRD installed (as
//! `kubectl apply` of `keyward crd` would) behind the watch layer, and
//! [`handler`] answers HTTP/1.1 requests with it (served by keyward's one
//! serve loop, `keyward::demo::apiserver::serve`), so that a separate
//! process (`keyward operator` with [`kubeconfig`]'s file, or `kubectl`)
//! talks to it as to an API server. No TLS and no authentication: loopback
//! only.
//!
//! Besides the Kubernetes paths it answers `GET /fakeapi/writes`: every
//! request other than GET, HEAD or a watch, counted by `METHOD resource` (with
//! `/subresource`), as one JSON object. Benchmarks read it to count a client's
//! writes from outside the client's process.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;
use tower::Service;

pub use super::ResponseBody;
use super::{WatchService, respond};

/// Write requests seen, by `METHOD resource[/subresource]`.
#[derive(Default)]
pub struct Writes(Mutex<BTreeMap<String, u64>>);

impl Writes {
    fn count(&self, method: &Method, path: &str) {
        let key = format!("{method} {}", resource_of(path));
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(key).or_default() += 1;
    }

    /// The counts so far.
    #[must_use]
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// `secrets`, `apikeys/status`, `leases`... from an API path.
#[must_use]
pub fn resource_of(path: &str) -> String {
    let Some((target, name)) = super::Target::parse(path) else { return path.to_owned() };
    let sub = name.and_then(|_| {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let at = parts.iter().position(|p| *p == target.resource)?;
        parts.get(at + 2).map(|s| (*s).to_owned())
    });
    match sub {
        Some(sub) => format!("{}/{sub}", target.resource),
        None => target.resource,
    }
}

/// An empty in-memory cluster with the ApiKey CRD installed and its status subresource served,
/// ending watches on their timeout as a real server does.
pub async fn cluster() -> Result<WatchService, kube_fake_client::Error> {
    Ok(super::FakeCluster::new().with_crd().service().await?.ending_watches_on_timeout())
}

/// A kubeconfig whose current context points at `http://addr` without credentials.
#[must_use]
pub fn kubeconfig(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
  - name: keyward-fake
    cluster:
      server: http://{addr}
users:
  - name: keyward-fake
    user: {{}}
contexts:
  - name: keyward-fake
    context:
      cluster: keyward-fake
      user: keyward-fake
      namespace: default
current-context: keyward-fake
"
    )
}

/// A request handler answering with `api` and counting writes into `writes`, for an HTTP/1 serve loop.
pub fn handler(
    api: WatchService,
    writes: Arc<Writes>,
) -> impl Fn(Request<hyper::body::Incoming>) -> BoxFuture<'static, Result<Response<ResponseBody>, Infallible>>
+ Clone
+ Send
+ 'static {
    move |req: Request<hyper::body::Incoming>| {
        let (api, writes) = (api.clone(), writes.clone());
        Box::pin(async move { Ok::<_, Infallible>(answer(api, &writes, req).await) })
    }
}

async fn answer(mut api: WatchService, writes: &Writes, req: Request<hyper::body::Incoming>) -> Response<ResponseBody> {
    let (parts, body) = req.into_parts();
    if parts.method == Method::GET && parts.uri.path() == "/fakeapi/writes" {
        let counts = serde_json::to_vec(&writes.snapshot()).unwrap_or_default();
        return respond(StatusCode::OK, Bytes::from(counts));
    }
    if parts.method != Method::GET && parts.method != Method::HEAD {
        writes.count(&parts.method, parts.uri.path());
    }
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return failure(StatusCode::BAD_REQUEST, &format!("reading the request body: {e}")),
    };
    let req = Request::from_parts(parts, kube::client::Body::from(bytes));
    match api.call(req).await {
        Ok(response) => response,
        Err(e) => failure(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// A Kubernetes `Status` failure, which kube clients turn into an API error.
fn failure(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let body = json!({"kind":"Status","apiVersion":"v1","status":"Failure","message":message,"code":status.as_u16()});
    respond(status, Bytes::from(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_named_by_resource_and_subresource() {
        assert_eq!(resource_of("/apis/keyward.dev/v1alpha1/namespaces/a/apikeys/k/status"), "apikeys/status");
        assert_eq!(resource_of("/apis/keyward.dev/v1alpha1/namespaces/a/apikeys"), "apikeys");
        assert_eq!(resource_of("/api/v1/namespaces/a/secrets/s"), "secrets");
        assert_eq!(resource_of("/apis/coordination.k8s.io/v1/namespaces/k/leases/op"), "leases");
    }
}
