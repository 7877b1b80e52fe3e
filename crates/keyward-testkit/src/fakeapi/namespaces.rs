//! Namespaces, which kube-fake-client cannot serve over its paths (`/api/v1/namespaces[/name]`
//! reads as a namespaced path there): created, read, listed, watched and deleted here.
//!
//! Patches are JSON merge patches (labels and annotations read the same as with a
//! strategic merge patch); `kubernetes.io/metadata.name` is kept, as the API server does.
//!
//! Known differences: a namespace need not exist for objects to be created in it, and
//! deleting one removes it at once without deleting its contents.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::{ResponseBody, State, Target, respond, status_failure};

/// The namespaces that exist, by name.
#[derive(Default)]
pub(super) struct Namespaces(std::sync::Mutex<BTreeMap<String, Value>>);

/// Whether a request is about Namespaces themselves.
pub(super) fn is_namespaces(target: &Target) -> bool {
    target.prefix == "api/v1" && target.resource == "namespaces" && target.namespace.is_none()
}

impl State {
    /// The namespaces `selector` (a `labelSelector` as sent) matches, as a `NamespaceList` at the
    /// current resource version (also the first events of a watch of Namespaces).
    pub(super) fn namespace_list(&self, selector: Option<&str>) -> Value {
        let namespaces = self.namespaces.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let labels =
            |ns: &Value| ns.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default();
        let items: Vec<Value> =
            namespaces.values().filter(|ns| super::selector_matches(selector, &labels(ns))).cloned().collect();
        json!({"apiVersion": "v1", "kind": "NamespaceList",
            "metadata": {"resourceVersion": self.current().to_string()}, "items": items})
    }

    pub(super) fn namespaces(
        &self,
        method: &Method,
        name: Option<&str>,
        body: &[u8],
        dry_run: bool,
        now: &str,
        selector: Option<&str>,
    ) -> Response<ResponseBody> {
        let target = Target { prefix: "api/v1".to_owned(), resource: "namespaces".to_owned(), namespace: None };
        let mut namespaces = self.namespaces.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let not_found =
            |name: &str| status_failure(StatusCode::NOT_FOUND, "NotFound", &format!("namespaces \"{name}\" not found"));
        match (method, name) {
            (&Method::GET, None) => {
                drop(namespaces);
                respond(StatusCode::OK, Bytes::from(self.namespace_list(selector).to_string()))
            }
            (&Method::GET, Some(name)) => match namespaces.get(name) {
                Some(namespace) => respond(StatusCode::OK, Bytes::from(namespace.to_string())),
                None => not_found(name),
            },
            (&Method::POST, None) => {
                let Ok(mut namespace) = serde_json::from_slice::<Value>(body) else {
                    return status_failure(StatusCode::BAD_REQUEST, "BadRequest", "the body is not a Namespace");
                };
                let Some(name) = namespace.pointer("/metadata/name").and_then(Value::as_str).map(str::to_owned) else {
                    return status_failure(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "Invalid",
                        "metadata.name: Required value",
                    );
                };
                if namespaces.contains_key(&name) {
                    let message = format!("namespaces \"{name}\" already exists");
                    return status_failure(StatusCode::CONFLICT, "AlreadyExists", &message);
                }
                namespace["apiVersion"] = json!("v1");
                namespace["kind"] = json!("Namespace");
                let meta = &mut namespace["metadata"];
                meta["uid"] = json!(super::new_uid());
                meta["resourceVersion"] = json!((self.current() + 1).to_string());
                meta["creationTimestamp"] = json!(now);
                meta["labels"]["kubernetes.io/metadata.name"] = json!(name);
                namespace["spec"] = json!({"finalizers": ["kubernetes"]});
                namespace["status"] = json!({"phase": "Active"});
                if !dry_run {
                    namespaces.insert(name, namespace.clone());
                    drop(namespaces);
                    self.emit(target, "ADDED", namespace.clone());
                }
                respond(StatusCode::CREATED, Bytes::from(namespace.to_string()))
            }
            (&Method::PATCH, Some(name)) => {
                // A JSON merge patch (strategic merge reads the same for labels and annotations).
                let Some(mut namespace) = namespaces.get(name).cloned() else { return not_found(name) };
                let Ok(patch) = serde_json::from_slice::<Value>(body) else {
                    return status_failure(StatusCode::BAD_REQUEST, "BadRequest", "the body is not a merge patch");
                };
                json_patch::merge(&mut namespace, &patch);
                let meta = &mut namespace["metadata"];
                meta["name"] = json!(name);
                // The API server keeps this label, whatever a patch says.
                meta["labels"]["kubernetes.io/metadata.name"] = json!(name);
                meta["resourceVersion"] = json!((self.current() + 1).to_string());
                if !dry_run {
                    namespaces.insert(name.to_owned(), namespace.clone());
                    drop(namespaces);
                    self.emit(target, "MODIFIED", namespace.clone());
                }
                respond(StatusCode::OK, Bytes::from(namespace.to_string()))
            }
            (&Method::DELETE, Some(name)) => {
                let Some(namespace) = (if dry_run { namespaces.get(name).cloned() } else { namespaces.remove(name) })
                else {
                    return not_found(name);
                };
                drop(namespaces);
                if !dry_run {
                    self.emit(target, "DELETED", namespace.clone());
                }
                respond(StatusCode::OK, Bytes::from(namespace.to_string()))
            }
            _ => status_failure(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the in-memory API creates, reads, patches and deletes Namespaces only",
            ),
        }
    }
}
