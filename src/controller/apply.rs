//! Apply: carry out a plan's writes, in the order that makes a crash between any two safe.
//!
//! Order: finalizer (before anything is published); the token the publisher
//! holds in memory for a new key ([`crate::plan::Held`]); when the plan takes
//! access away ([`Publish::Now`]: revoked, disabled, expired, deleted,
//! invalid, narrowed) the key set next, before any other write, so a failing
//! Secret or status write cannot keep a withdrawn hash published (the
//! publisher rebuilds from the stored spec, which already says so); Secret (a
//! token is persisted before anything refers to it); the old key set after a
//! `keySet` change (before status forgets it); status (records the token,
//! which makes it publishable); Events; key set; then the finalizer release
//! and deletions. Writes are skipped when the plan says nothing changed.
//!
//! Write methods, and why:
//! - Secret and key-set ConfigMaps: server-side apply with field manager
//!   `keyward` (forced: keyward owns these fields). Data keys that must not be
//!   there are then removed with a JSON merge patch (`null`), only if the
//!   apply's response still shows them: real SSA already drops keys keyward
//!   stopped applying, but not keys someone else added, and kube-fake-client
//!   implements apply as a merge.
//! - Status: a JSON merge patch on the status subresource holding only the
//!   difference, with `null` for cleared fields (works the same on the fake).
//! - Finalizer: a JSON patch guarded by a `test` of the current list.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::api::{ApiKey, ApiKeyStatus};
use crate::plan::{DATA_NEXT_TOKEN, DATA_TOKEN, DesiredSecret, EventKind, FINALIZER, Finalizer, Plan, Publish, Source};
use crate::token::Token;

use super::observe::{Seen, token_of};
use super::{Context, Error, FIELD_MANAGER, key_set_id, namespace};

/// Carry out `plan` for `key`; returns the key as it now is in the API.
pub(super) async fn apply(ctx: &Context, key: ApiKey, seen: &Seen, plan: &Plan) -> Result<ApiKey, Error> {
    let key = add_finalizer(ctx, key, plan).await?;
    // After the finalizer (nothing is published without it), before a
    // withdrawal (which must not list a token the plan let go).
    ctx.publisher.hold(&key, plan.hold.as_ref()).await?;
    if plan.publish == Publish::Now {
        withdraw(ctx, &key).await?;
    }
    write_secret(ctx, &key, seen, plan).await?;
    delete_old_secret(ctx, &key, plan).await?;
    leave_old_key_set(ctx, &key, plan).await?;
    let key = write_status(ctx, key, plan).await?;
    emit_events(ctx, &key, plan).await;
    publish(ctx, &key, plan).await?;
    let key = release_finalizer(ctx, key, plan).await?;
    delete_expired(ctx, &key, plan).await?;
    Ok(key)
}

fn api<K>(ctx: &Context, key: &ApiKey) -> Result<Api<K>, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    Ok(Api::namespaced(ctx.client.clone(), namespace(key)?))
}

async fn add_finalizer(ctx: &Context, key: ApiKey, plan: &Plan) -> Result<ApiKey, Error> {
    if plan.finalizer != Finalizer::Add {
        return Ok(key);
    }
    add_finalizer_on(&api::<ApiKey>(ctx, &key)?, &key.metadata).await
}

/// Add [`FINALIZER`] to the object `meta` describes, guarded by what was read.
pub(super) async fn add_finalizer_on<K>(api: &Api<K>, meta: &ObjectMeta) -> Result<K, Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = match &meta.finalizers {
        // `add` would replace a list someone else created meanwhile: guard on the version read.
        None => json!([
            { "op": "test", "path": "/metadata/resourceVersion", "value": meta.resource_version },
            { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] },
        ]),
        Some(list) => json!([
            { "op": "test", "path": "/metadata/finalizers", "value": list },
            { "op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER },
        ]),
    };
    let patch: json_patch::Patch = serde_json::from_value(patch)?;
    let name = meta.name.as_deref().ok_or(Error::MissingField("metadata.name"))?;
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch)).await.map_err(guarded("add finalizer"))
}

/// Errors of a JSON patch guarded by `test`: a real API server answers a
/// failed `test` with 422, which here means "changed since read", a conflict.
pub(super) fn guarded(action: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |e| match e {
        kube::Error::Api(status) if status.code == 422 => Error::Changed { action },
        e => Error::kube(action)(e),
    }
}

async fn release_finalizer(ctx: &Context, key: ApiKey, plan: &Plan) -> Result<ApiKey, Error> {
    if plan.finalizer != Finalizer::Remove {
        return Ok(key);
    }
    let api = api::<ApiKey>(ctx, &key)?;
    release_finalizer_on(&api, key).await
}

/// Remove [`FINALIZER`] from `object`, guarded by the list read; the object as it then is.
pub(super) async fn release_finalizer_on<K>(api: &Api<K>, object: K) -> Result<K, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(list) = &object.meta().finalizers else { return Ok(object) };
    let kept: Vec<&String> = list.iter().filter(|f| *f != FINALIZER).collect();
    let patch: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": "/metadata/finalizers", "value": list },
        { "op": "replace", "path": "/metadata/finalizers", "value": kept },
    ]))?;
    let result = api.patch(&object.name_any(), &PatchParams::default(), &Patch::<()>::Json(patch)).await;
    let key = object;
    match result {
        Ok(key) => Ok(key),
        // The object went away as soon as its last finalizer did.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(key),
        Err(e) => Err(guarded("release finalizer")(e)),
    }
}

async fn write_secret(ctx: &Context, key: &ApiKey, seen: &Seen, plan: &Plan) -> Result<(), Error> {
    let owner = OwnerReference {
        api_version: ApiKey::api_version(&()).into_owned(),
        kind: ApiKey::kind(&()).into_owned(),
        name: key.name_any(),
        uid: key.metadata.uid.clone().ok_or(Error::MissingField("metadata.uid"))?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    write_secret_in(ctx, namespace(key)?, owner, seen.secret.as_ref(), plan).await
}

/// Write the Secret `plan` wants into `namespace`, owned by `owner`, taking tokens the plan
/// moves from `seen` (the Secret as read) and minting the one it asks for.
pub(super) async fn write_secret_in(
    ctx: &Context,
    namespace: &str,
    owner: OwnerReference,
    seen: Option<&Secret>,
    plan: &Plan,
) -> Result<(), Error> {
    let Some(desired) = &plan.secret else { return Ok(()) };
    let minted = plan.mint.as_ref().map(|m| (ctx.mint)(&m.prefix));
    let resolve = |source: Option<Source>| -> Option<Token> {
        let held = |data_key: &str| seen.and_then(|s| s.data.as_ref()).and_then(|d| d.get(data_key)).and_then(token_of);
        match source? {
            Source::Token => held(DATA_TOKEN),
            Source::NextToken => held(DATA_NEXT_TOKEN),
            Source::Minted => minted.clone(),
        }
    };
    let secret = secret_object(namespace, owner, desired, resolve(desired.token), resolve(desired.next_token));
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let written =
        secrets.patch(&desired.name, &params, &Patch::Apply(&secret)).await.map_err(Error::kube("apply Secret"))?;
    if let Some(id) = minted.as_ref().map(|t| t.hash().key_id()) {
        info!(namespace, secret = %desired.name, key_id = %id, "token minted into Secret");
    }
    let wanted: Vec<&str> = [(DATA_TOKEN, desired.token), (DATA_NEXT_TOKEN, desired.next_token)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|_| k))
        .collect();
    let extra: BTreeMap<String, Value> = written
        .data
        .iter()
        .flatten()
        .map(|(k, _)| k)
        .filter(|k| !wanted.contains(&k.as_str()))
        .map(|k| (k.clone(), Value::Null))
        .collect();
    if !extra.is_empty() {
        secrets
            .patch(&desired.name, &PatchParams::default(), &Patch::Merge(json!({ "data": extra })))
            .await
            .map_err(Error::kube("prune Secret"))?;
    }
    Ok(())
}

fn secret_object(
    namespace: &str,
    owner: OwnerReference,
    desired: &DesiredSecret,
    token: Option<Token>,
    next_token: Option<Token>,
) -> Secret {
    let mut data = BTreeMap::new();
    for (data_key, value) in [(DATA_TOKEN, token), (DATA_NEXT_TOKEN, next_token)] {
        if let Some(token) = value {
            data.insert(data_key.to_owned(), ByteString(token.expose().as_bytes().to_vec()));
        }
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(desired.name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(desired.labels.clone()),
            annotations: (!desired.annotations.is_empty()).then(|| desired.annotations.clone()),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

async fn delete_old_secret(ctx: &Context, key: &ApiKey, plan: &Plan) -> Result<(), Error> {
    let uid = key.metadata.uid.as_deref().ok_or(Error::MissingField("metadata.uid"))?;
    delete_old_secret_in(ctx, namespace(key)?, uid, plan).await
}

/// Delete the earlier Secret `plan` names in `namespace`, if the owner with `uid` owns it.
pub(super) async fn delete_old_secret_in(ctx: &Context, namespace: &str, uid: &str, plan: &Plan) -> Result<(), Error> {
    let Some(name) = &plan.delete_secret else { return Ok(()) };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(old) = secrets.get_opt(name).await.map_err(Error::kube("get old Secret"))? else { return Ok(()) };
    if old.metadata.owner_references.iter().flatten().any(|o| o.uid == uid) {
        secrets.delete(name, &DeleteParams::default()).await.map_err(Error::kube("delete old Secret"))?;
    }
    Ok(())
}

/// Rebuild the key set the key moved out of. It runs before status forgets
/// the old set: the rebuild reads the new `spec.keySet`, so the key is gone from it.
async fn leave_old_key_set(ctx: &Context, key: &ApiKey, plan: &Plan) -> Result<(), Error> {
    let Some(name) = &plan.leave_key_set else { return Ok(()) };
    let id = crate::keyset::KeySetId { namespace: namespace(key)?.to_owned(), name: name.clone() };
    ctx.publisher.publish_now(&id).await
}

async fn write_status(ctx: &Context, key: ApiKey, plan: &Plan) -> Result<ApiKey, Error> {
    let Some(status) = &plan.status else { return Ok(key) };
    let old = serde_json::to_value(key.status.clone().unwrap_or_default())?;
    let new = serde_json::to_value(status)?;
    let patch = json!({ "status": merge_diff(&old, &new) });
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
    api::<ApiKey>(ctx, &key)?
        .patch_status(&key.name_any(), &params, &Patch::Merge(patch))
        .await
        .map_err(Error::kube("patch status"))
}

/// The JSON merge patch (RFC 7386) turning `old` into `new`.
pub(super) fn merge_diff(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = serde_json::Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) if ov == nv => {}
                    Some(ov) if ov.is_object() && nv.is_object() => {
                        patch.insert(k.clone(), merge_diff(ov, nv));
                    }
                    _ => {
                        patch.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

async fn emit_events(ctx: &Context, key: &ApiKey, plan: &Plan) {
    for kind in &plan.anomalies {
        ctx.publisher.metrics().usage_anomaly(key.namespace().as_deref().unwrap_or_default(), *kind);
    }
    let reference = key.object_ref(&());
    let key_id = event_key_id(key, plan);
    for planned in &plan.events {
        record_event(ctx, &reference, key_id, planned).await;
        // The same step, to the namespace's webhooks: queued, never awaited.
        if let Some(notice) = crate::notice::notice(key, planned, key_id, (ctx.clock)()) {
            ctx.notifier.notify(notice);
        }
    }
}

/// Log one lifecycle step of the object `reference` names and write its Kubernetes Event.
pub(super) async fn record_event(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    key_id: &str,
    planned: &crate::plan::PlannedEvent,
) {
    info!(
        namespace = reference.namespace.as_deref().unwrap_or_default(),
        name = reference.name.as_deref().unwrap_or_default(),
        key_id,
        reason = planned.reason.as_str(),
        note = %planned.note,
        "lifecycle step"
    );
    let event = Event {
        type_: match planned.kind {
            EventKind::Normal => EventType::Normal,
            EventKind::Warning => EventType::Warning,
        },
        reason: planned.reason.as_str().to_owned(),
        note: Some(truncate_note(&planned.note)),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    // An Event that cannot be written must not stop the lifecycle.
    if let Err(e) = ctx.recorder.publish(&event, reference).await {
        let name = reference.name.as_deref().unwrap_or_default();
        warn!(name, reason = planned.reason.as_str(), error = %e, "could not publish Event");
    }
}

/// The key id a lifecycle step is about: the token this plan holds for the
/// publisher (a new key's, which no status names yet), else the current key of
/// the status being written, else of the stored one; empty when there is none.
pub(super) fn event_key_id<'a>(key: &'a ApiKey, plan: &'a Plan) -> &'a str {
    let current = |s: &'a ApiKeyStatus| s.current_key.as_ref().map(|k| k.key_id.as_str());
    plan.hold
        .as_ref()
        .map(|h| h.version.key_id.as_str())
        .or_else(|| plan.status.as_ref().and_then(current))
        .or_else(|| key.status.as_ref().and_then(current))
        .unwrap_or_default()
}

/// Longest Event note, in bytes: the API server refuses notes of 1 KiB or more.
const MAX_NOTE_BYTES: usize = 1000;

/// `note` cut to under 1 KiB at a character boundary, marked with `…` when cut.
pub(super) fn truncate_note(note: &str) -> String {
    if note.len() <= MAX_NOTE_BYTES {
        return note.to_owned();
    }
    let mut end = MAX_NOTE_BYTES - '…'.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &note[..end])
}

/// Publish a withdrawal before anything else is written.
async fn withdraw(ctx: &Context, key: &ApiKey) -> Result<(), Error> {
    ctx.publisher.publish_now(&key_set_id(key)?).await
}

async fn publish(ctx: &Context, key: &ApiKey, plan: &Plan) -> Result<(), Error> {
    let id = key_set_id(key)?;
    match plan.publish {
        Publish::Unchanged => Ok(()),
        Publish::Soon => {
            ctx.publisher.request(id);
            Ok(())
        }
        // Published first already; again now in case status changed the records
        // too (writes nothing when they did not).
        Publish::Now => ctx.publisher.publish_now(&id).await,
    }
}

async fn delete_expired(ctx: &Context, key: &ApiKey, plan: &Plan) -> Result<(), Error> {
    if plan.delete_apikey {
        api::<ApiKey>(ctx, key)?
            .delete(&key.name_any(), &DeleteParams::default())
            .await
            .map_err(Error::kube("delete expired ApiKey"))?;
    }
    Ok(())
}
