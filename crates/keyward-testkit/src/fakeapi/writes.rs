//! Writes as the API server carries them out, in front of kube-fake-client's store.
//!
//! kube-fake-client deletes at once, ignoring finalizers; stores dry runs; moves
//! `metadata.generation` on every write but a status one; and stores whatever it is sent.
//! Here, as on the API server (each point is a fake-vs-real scenario):
//!
//! - DELETE of an object with finalizers sets `deletionTimestamp` (and moves the generation)
//!   and keeps it; a write that empties its finalizers removes it (watchers see `DELETED`);
//!   no finalizer may be added meanwhile (`422`). A DELETE that removes answers a `Status`.
//! - `?dryRun=All` creates, updates, patches and deletes nothing, and answers as if it had.
//! - `metadata.generation` of a custom resource moves when anything but `metadata` and
//!   `status` changes; core/v1 and `*.k8s.io` objects carry none.
//! - ApiKeys are pruned, defaulted and validated ([`super::admission`]) before they are stored.
//! - Server-side apply removes what the same manager applied before and leaves out now,
//!   unless another manager owns it ([`super::apply`]).
//! - Secrets and ConfigMaps an object owns go with it (kube-fake-client's cascade), and
//!   watchers see them go, as they would when the garbage collector deletes them.
//!
//! What kube-fake-client cannot store (`deletionTimestamp`, which its updates refuse to
//! change, and the generation it would move) is kept here by uid and laid over every object
//! read, listed or watched ([`State::decorate`]).

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::admission::{self, FieldError};
use super::{BoxError, ResponseBody, State, Target, WatchService, respond, status_failure};

/// What the API server keeps in an object's metadata that kube-fake-client cannot.
#[derive(Default, Clone, Debug)]
pub(super) struct Overlay {
    generation: Option<i64>,
    deletion: Option<String>,
}

/// One write request, taken apart.
pub(super) struct Write {
    pub method: Method,
    pub target: Target,
    pub name: Option<String>,
    /// To the status subresource.
    pub status: bool,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: Bytes,
    pub dry_run: bool,
}

/// The fake API server's clock.
#[must_use]
#[allow(clippy::disallowed_methods)] // The API server's own clock (deletions, ages), not a decision of keyward's.
pub(super) fn now_timestamp() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// The fake API server's clock, in the form of `metadata.creationTimestamp`.
#[must_use]
pub(super) fn now() -> String {
    now_timestamp().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Whether the API server keeps `metadata.generation` for objects under `target`.
fn tracks_generation(target: &Target) -> bool {
    target.prefix != "api/v1" && !target.group().ends_with(".k8s.io")
}

fn is_api_keys(target: &Target) -> bool {
    target.prefix == "apis/keyward.dev/v1alpha1" && target.resource == "apikeys"
}

fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn uid(object: &Value) -> Option<String> {
    object.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_owned)
}

fn generation(object: &Value) -> i64 {
    object.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1)
}

/// Whether anything but metadata and status differs: what moves a generation.
fn spec_changed(old: &Value, new: &Value) -> bool {
    let rest = |object: &Value| {
        let mut object = object.clone();
        if let Some(map) = object.as_object_mut() {
            for key in ["metadata", "status", "apiVersion", "kind"] {
                map.remove(key);
            }
        }
        object
    };
    rest(old) != rest(new)
}

/// What kube-fake-client refuses to be sent (it cannot change them), and the server sets itself.
fn without_deletion(mut object: Value) -> Value {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
    }
    object
}

/// `existing` with a patch applied the way kube-fake-client applies it (JSON patch, or a
/// merge for every other kind); `None` when the patch does not apply.
fn patched(existing: &Value, patch: &Value, content_type: Option<&str>) -> Option<Value> {
    let mut out = existing.clone();
    if content_type.is_some_and(|c| c.contains("application/json-patch+json")) {
        let patch: json_patch::Patch = serde_json::from_value(patch.clone()).ok()?;
        json_patch::patch(&mut out, &patch).ok()?;
    } else {
        json_patch::merge(&mut out, patch);
    }
    Some(out)
}

/// The kind as a refusal names it: `ApiKey.keyward.dev`, or `ConfigMap` in the core group.
fn qualified_kind(target: &Target, object: &Value) -> String {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or(&target.resource);
    match target.group() {
        "" => kind.to_owned(),
        group => format!("{kind}.{group}"),
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<ResponseBody> {
    respond(status, Bytes::from(value.to_string()))
}

impl State {
    /// Lay what this layer keeps (generation, deletion) over an object from the store.
    pub(super) fn decorate(&self, target: &Target, object: &mut Value) {
        let overlay = uid(object)
            .and_then(|uid| self.overlay.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&uid).cloned());
        let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else { return };
        if target.namespace.as_deref() == Some(super::CLUSTER_SCOPE_NAMESPACE) {
            // Cluster-scoped: no namespace, as on a real server (the store keeps one).
            meta.remove("namespace");
        }
        if !tracks_generation(target) {
            meta.remove("generation");
        }
        let Some(overlay) = overlay else { return };
        if let Some(generation) = overlay.generation.filter(|_| tracks_generation(target)) {
            meta.insert("generation".to_owned(), json!(generation));
        }
        if let Some(deletion) = overlay.deletion {
            meta.insert("deletionTimestamp".to_owned(), json!(deletion));
            meta.insert("deletionGracePeriodSeconds".to_owned(), json!(0));
        }
    }

    fn remember(&self, object: &Value, change: impl FnOnce(&mut Overlay)) {
        if let Some(uid) = uid(object) {
            change(self.overlay.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(uid).or_default());
        }
    }

    fn forget(&self, object: &Value) {
        if let Some(uid) = uid(object) {
            self.overlay.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&uid);
        }
    }

    /// Record a change to an object, into its namespace's collection.
    fn changed(&self, target: &Target, type_: &str, object: Value) {
        let mut target = target.clone();
        if target.namespace.is_none() {
            target.namespace = object.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_owned);
        }
        self.emit(target, type_, object);
    }
}

impl WatchService {
    /// Carry out a create, update, patch or delete.
    pub(super) async fn write(&self, write: Write) -> Result<Response<ResponseBody>, BoxError> {
        match (&write.method, write.name.is_some()) {
            (&Method::POST, false) => self.create(write).await,
            (&Method::PUT | &Method::PATCH, true) => self.update(write).await,
            (&Method::DELETE, true) => self.delete(write).await,
            _ => {
                // Collection deletes and anything else: as kube-fake-client does them.
                let uri =
                    if write.query.is_empty() { write.path.clone() } else { format!("{}?{}", write.path, write.query) };
                let (status, bytes) =
                    self.inner(write.method, &uri, write.content_type.as_deref(), write.body.to_vec()).await?;
                Ok(respond(status, bytes))
            }
        }
    }

    /// Prune, default and validate an ApiKey (`old` for an update); the refusal, if any.
    fn admit(target: &Target, object: &mut Value, old: Option<&Value>) -> Option<Response<ResponseBody>> {
        if !is_api_keys(target) {
            return None;
        }
        let admission = admission::api_keys();
        admission.normalize(object);
        // Ratcheting, as the API server's for unchanged fields: a write that leaves the spec as
        // it is (finalizers, labels, annotations) is not refused for what was stored before.
        // The stored object is compared as the API server reads it: defaulted (defaults apply
        // on read too, so one stored before a default existed compares with it).
        let old_read = old.map(|old| {
            let mut read = old.clone();
            admission.normalize(&mut read);
            read
        });
        if old_read.as_ref().is_some_and(|old| !spec_changed(old, object)) {
            return None;
        }
        let errors = admission.errors(object, old);
        if errors.is_empty() {
            return None;
        }
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        let refusal = admission::invalid(&qualified_kind(target, object), target.group(), name, &errors);
        Some(json_response(StatusCode::UNPROCESSABLE_ENTITY, &refusal))
    }

    async fn create(&self, write: Write) -> Result<Response<ResponseBody>, BoxError> {
        let Ok(mut object) = serde_json::from_slice::<Value>(&write.body) else {
            return Ok(status_failure(StatusCode::BAD_REQUEST, "BadRequest", "the body is not a JSON object"));
        };
        if let Some(refusal) = Self::admit(&write.target, &mut object, None) {
            return Ok(refusal);
        }
        let object = without_deletion(object);
        if write.dry_run {
            return self.dry_create(&write.target, object).await;
        }
        let (status, bytes) =
            self.inner(Method::POST, &write.path, write.content_type.as_deref(), serde_json::to_vec(&object)?).await?;
        self.created(&write.target, status, &bytes)
    }

    /// After a successful create: tell the watchers.
    fn created(&self, target: &Target, status: StatusCode, bytes: &Bytes) -> Result<Response<ResponseBody>, BoxError> {
        if !status.is_success() {
            return Ok(respond(status, bytes.clone()));
        }
        let mut created: Value = serde_json::from_slice(bytes)?;
        self.state.decorate(target, &mut created);
        self.state.changed(target, "ADDED", created.clone());
        Ok(json_response(StatusCode::CREATED, &created))
    }

    /// A create that stores nothing: refused if the name is taken, else answered as created.
    async fn dry_create(&self, target: &Target, mut object: Value) -> Result<Response<ResponseBody>, BoxError> {
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_owned();
        if self.stored(target, &name).await?.is_some() {
            let message = format!("{} \"{name}\" already exists", target.resource);
            return Ok(status_failure(StatusCode::CONFLICT, "AlreadyExists", &message));
        }
        let meta = &mut object["metadata"];
        meta["uid"] = json!(super::new_uid());
        meta["creationTimestamp"] = json!(now());
        if let Some(namespace) = &target.namespace {
            meta["namespace"] = json!(namespace);
        }
        if tracks_generation(target) {
            meta["generation"] = json!(1);
        }
        Ok(json_response(StatusCode::CREATED, &object))
    }

    /// PUT or PATCH of an object or its status.
    async fn update(&self, write: Write) -> Result<Response<ResponseBody>, BoxError> {
        let target = &write.target;
        let name = write.name.clone().unwrap_or_default();
        let Ok(body) = serde_json::from_slice::<Value>(&write.body) else {
            return Ok(status_failure(StatusCode::BAD_REQUEST, "BadRequest", "the body is not JSON"));
        };
        let apply = write.content_type.as_deref().is_some_and(|c| c.contains("application/apply-patch"));
        let Some(existing) = self.stored(target, &name).await? else {
            if apply && !write.status {
                return self.apply_create(write, body).await;
            }
            return Ok(status_failure(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{} \"{name}\" not found", target.resource),
            ));
        };
        // What would be stored, to judge it before anything is.
        let whole = if write.method == Method::PUT {
            Some(body.clone())
        } else {
            patched(&existing, &body, write.content_type.as_deref())
        };
        let Some(mut new) = whole else {
            // A JSON patch that does not apply: kube-fake-client says why.
            return self.forward(&write).await;
        };
        // What this manager applied last time and leaves out now goes (server-side apply).
        let unapplied = if apply && !write.status {
            let manager = super::query_param(&write.query, "fieldManager").map(super::decode).unwrap_or_default();
            super::apply::removed(&existing, &body, &manager)
        } else {
            Vec::new()
        };
        for path in &unapplied {
            super::apply::remove(&mut new, path);
        }
        if write.status {
            let mut only_status = existing.clone();
            only_status["status"] = new.get("status").cloned().unwrap_or(Value::Null);
            new = only_status;
        } else {
            if let Some(status) = existing.get("status").filter(|_| is_api_keys(target)) {
                new["status"] = status.clone();
            }
            if let Some(refusal) = Self::admit(target, &mut new, Some(&existing)) {
                return Ok(refusal);
            }
        }
        if let Some(refusal) = Self::no_new_finalizers(target, &existing, &new) {
            return Ok(refusal);
        }
        if write.dry_run {
            let moved = !write.status && spec_changed(&existing, &new);
            let meta = &mut new["metadata"];
            for field in ["uid", "creationTimestamp", "resourceVersion", "deletionTimestamp", "namespace"] {
                meta[field] = existing["metadata"][field].clone();
            }
            if tracks_generation(target) {
                meta["generation"] = json!(generation(&existing) + i64::from(moved));
            }
            return Ok(json_response(StatusCode::OK, &new));
        }
        let (status, bytes) = if write.method == Method::PUT {
            let body = if write.status { without_deletion(body) } else { without_deletion(new.clone()) };
            self.inner(Method::PUT, &write.path, write.content_type.as_deref(), serde_json::to_vec(&body)?).await?
        } else {
            self.send(&write).await?
        };
        if !status.is_success() {
            return Ok(respond(status, bytes));
        }
        let mut result: Value = serde_json::from_slice(&bytes)?;
        if write.method == Method::PATCH && !write.status {
            // A patch is stored as kube-fake-client merges it; store it as admission and
            // server-side apply leave it.
            let mut normalized = result.clone();
            if is_api_keys(target) {
                admission::api_keys().normalize(&mut normalized);
            }
            for path in &unapplied {
                super::apply::remove(&mut normalized, path);
            }
            if normalized != result {
                let (status, bytes) = self
                    .inner(
                        Method::PUT,
                        &target.path(Some(&name)),
                        None,
                        serde_json::to_vec(&without_deletion(normalized))?,
                    )
                    .await?;
                if !status.is_success() {
                    return Ok(respond(status, bytes));
                }
                result = serde_json::from_slice(&bytes)?;
            }
        }
        self.updated(target, &existing, result, write.status).await
    }

    /// After a successful update: the generation, a finished deletion, the watchers.
    async fn updated(
        &self,
        target: &Target,
        existing: &Value,
        mut result: Value,
        status: bool,
    ) -> Result<Response<ResponseBody>, BoxError> {
        if tracks_generation(target) {
            let moved = !status && spec_changed(existing, &result);
            let generation = generation(existing) + i64::from(moved);
            self.state.remember(&result, |o| o.generation = Some(generation));
        }
        self.state.decorate(target, &mut result);
        let deleting = result.pointer("/metadata/deletionTimestamp").is_some();
        if deleting && finalizers(&result).is_empty() {
            let name = result.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_owned();
            let dependents = self.dependents(&result).await?;
            let (status, bytes) = self.inner(Method::DELETE, &target.path(Some(&name)), None, Vec::new()).await?;
            if !status.is_success() {
                return Ok(respond(status, bytes));
            }
            self.state.forget(&result);
            self.state.changed(target, "DELETED", result.clone());
            self.collected(dependents);
        } else {
            self.state.changed(target, "MODIFIED", result.clone());
        }
        Ok(json_response(StatusCode::OK, &result))
    }

    /// Server-side apply of an object that does not exist yet: a create.
    async fn apply_create(&self, write: Write, body: Value) -> Result<Response<ResponseBody>, BoxError> {
        let mut object = body;
        object["metadata"]["name"] = json!(write.name);
        if let Some(namespace) = &write.target.namespace {
            object["metadata"]["namespace"] = json!(namespace);
        }
        if let Some(refusal) = Self::admit(&write.target, &mut object, None) {
            return Ok(refusal);
        }
        if write.dry_run {
            return self.dry_create(&write.target, object).await;
        }
        let (status, bytes) = self.send(&write).await?;
        if status.is_success() && is_api_keys(&write.target) {
            let mut stored: Value = serde_json::from_slice(&bytes)?;
            admission::api_keys().normalize(&mut stored);
            let name = write.name.as_deref().unwrap_or("");
            let (status, bytes) =
                self.inner(Method::PUT, &write.target.path(Some(name)), None, serde_json::to_vec(&stored)?).await?;
            return self.created(&write.target, status, &bytes);
        }
        self.created(&write.target, status, &bytes)
    }

    /// The Secrets and ConfigMaps `owner` owns (by uid), which kube-fake-client deletes with
    /// it: what the garbage collector would delete, so that watchers hear of it.
    async fn dependents(&self, owner: &Value) -> Result<Vec<(Target, Value)>, BoxError> {
        let (Some(uid), Some(namespace)) =
            (uid(owner), owner.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_owned))
        else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        for resource in ["secrets", "configmaps"] {
            let target = Target {
                prefix: "api/v1".to_owned(),
                resource: resource.to_owned(),
                namespace: Some(namespace.clone()),
            };
            let (status, bytes) = self.inner(Method::GET, &target.path(None), None, Vec::new()).await?;
            if !status.is_success() {
                continue;
            }
            let list: Value = serde_json::from_slice(&bytes)?;
            let theirs = list["items"].as_array().into_iter().flatten().filter(|item| {
                let owners = item.pointer("/metadata/ownerReferences").and_then(Value::as_array);
                owners.into_iter().flatten().any(|o| o["uid"].as_str() == Some(uid.as_str()))
            });
            found.extend(theirs.map(|item| (target.clone(), item.clone())));
        }
        Ok(found)
    }

    /// Tell watchers that the dependents of a deleted owner went with it.
    fn collected(&self, dependents: Vec<(Target, Value)>) {
        for (target, mut dependent) in dependents {
            self.state.decorate(&target, &mut dependent);
            self.state.forget(&dependent);
            self.state.changed(&target, "DELETED", dependent);
        }
    }

    /// Once an object is being deleted, the API server refuses new finalizers.
    fn no_new_finalizers(target: &Target, existing: &Value, new: &Value) -> Option<Response<ResponseBody>> {
        existing.pointer("/metadata/deletionTimestamp")?;
        let old = finalizers(existing);
        let added: Vec<String> = finalizers(new).into_iter().filter(|f| !old.contains(f)).collect();
        if added.is_empty() {
            return None;
        }
        let name = existing.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        let error = FieldError {
            field: "metadata.finalizers".to_owned(),
            message: format!(
                "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
            ),
        };
        let refusal = admission::invalid(&qualified_kind(target, existing), target.group(), name, &[error]);
        Some(json_response(StatusCode::UNPROCESSABLE_ENTITY, &refusal))
    }

    /// The request as it came, to kube-fake-client.
    async fn send(&self, write: &Write) -> Result<(StatusCode, Bytes), BoxError> {
        let uri = if write.query.is_empty() { write.path.clone() } else { format!("{}?{}", write.path, write.query) };
        self.inner(write.method.clone(), &uri, write.content_type.as_deref(), write.body.to_vec()).await
    }

    async fn forward(&self, write: &Write) -> Result<Response<ResponseBody>, BoxError> {
        let (status, bytes) = self.send(write).await?;
        Ok(respond(status, bytes))
    }

    async fn delete(&self, write: Write) -> Result<Response<ResponseBody>, BoxError> {
        let target = &write.target;
        let name = write.name.clone().unwrap_or_default();
        let Some(existing) = self.stored(target, &name).await? else {
            return self.forward(&write).await;
        };
        if !finalizers(&existing).is_empty() {
            if existing.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(json_response(StatusCode::OK, &existing));
            }
            let mut marked = existing.clone();
            marked["metadata"]["deletionTimestamp"] = json!(now());
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if write.dry_run {
                return Ok(json_response(StatusCode::OK, &marked));
            }
            // An unchanged write gives the object the new resourceVersion a mark has.
            let (status, bytes) = self
                .inner(
                    Method::PUT,
                    &target.path(Some(&name)),
                    None,
                    serde_json::to_vec(&without_deletion(existing.clone()))?,
                )
                .await?;
            if !status.is_success() {
                return Ok(respond(status, bytes));
            }
            let mut result: Value = serde_json::from_slice(&bytes)?;
            let generation = generation(&existing) + 1;
            let deletion = marked["metadata"]["deletionTimestamp"].as_str().map(str::to_owned);
            self.state.remember(&result, |o| {
                o.generation = Some(generation);
                o.deletion = deletion;
            });
            self.state.decorate(target, &mut result);
            self.state.changed(target, "MODIFIED", result.clone());
            return Ok(json_response(StatusCode::OK, &result));
        }
        let gone = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "group": target.group(), "kind": target.resource, "uid": uid(&existing)},
        });
        if write.dry_run {
            return Ok(json_response(StatusCode::OK, &gone));
        }
        let dependents = self.dependents(&existing).await?;
        let (status, bytes) = self.send(&write).await?;
        if !status.is_success() {
            return Ok(respond(status, bytes));
        }
        self.state.forget(&existing);
        self.state.changed(target, "DELETED", existing);
        self.collected(dependents);
        Ok(json_response(StatusCode::OK, &gone))
    }
}

#[cfg(test)]
mod tests {
    use kube::api::{Patch, PatchParams};
    use kube::{Api, core::DynamicObject};
    use serde_json::json;

    use crate::fakeapi::FakeCluster;

    #[tokio::test]
    async fn a_stored_invalid_api_key_takes_metadata_writes_but_no_spec_change_that_stays_invalid() {
        // Seeded past admission, as an object from before a CRD upgrade would be.
        let key: keyward_api::ApiKey = serde_json::from_value(json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": "old", "namespace": "a"}, "spec": {"scopes": ["not a scope"]},
        }))
        .unwrap();
        let client = FakeCluster::new().with_object(key).client().await.unwrap();
        let resource = kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("keyward.dev", "v1alpha1", "ApiKey"),
            "apikeys",
        );
        let keys: Api<DynamicObject> = Api::namespaced_with(client, "a", &resource);
        let merge = |patch| async { keys.patch("old", &PatchParams::default(), &Patch::Merge(patch)).await };
        merge(json!({"metadata": {"finalizers": ["keyward.dev/unpublish"]}})).await.expect("metadata writes ratchet");
        let refused = merge(json!({"spec": {"scopes": ["still not a scope"]}})).await.unwrap_err();
        assert!(matches!(refused, kube::Error::Api(ref e) if e.code == 422), "{refused}");
        merge(json!({"spec": {"scopes": ["orders:read"]}})).await.expect("a fix is accepted");
    }
}
