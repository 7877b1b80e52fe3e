//! Restarting the workloads that opted in, after a key's rotation: the I/O
//! around [`crate::plan::restarts`], which decides.
//!
//! Only a key whose previous token is in its grace period looks at workloads
//! at all (one metadata-only list per workload kind in its namespace), so a
//! converged key costs nothing. A workload is restarted with one merge patch,
//! as field manager `keyward`, that sets [`RESTARTED_AT_ANNOTATION`] in its
//! pod template (a rolling restart, as `kubectl rollout restart` does) and on
//! its own metadata (which the next look reads). Without RBAC for workloads
//! the operator says so once per key in a Warning Event and goes on: the
//! Secret holds the new token either way.
//!
//! A ClusterApiKey's token lives in its `spec.secretNamespace`, so the workloads there that
//! name it as `cluster/<name>` in their annotation are restarted after its rotation, the same
//! way ([`restart_for_cluster_key`]); workloads of the namespaces that only carry its hash have
//! no copy of its token to reload.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use k8s_openapi::api::core::v1::ObjectReference;

use crate::api::{ApiKey, ApiKeyStatus, CLUSTER_OWNER, ClusterApiKey};
use crate::plan::Reason;
use crate::plan::restarts::{RESTART_ANNOTATION, RESTARTED_AT_ANNOTATION, Workload, restarts};

use super::{Context, Error, FIELD_MANAGER, namespace};

/// Restart the opted-in workloads `key`'s last rotation owes a restart; when to look again.
pub(super) async fn restart_workloads(ctx: &Context, key: &ApiKey) -> Result<Option<Timestamp>, Error> {
    let owner = Owner {
        namespace: namespace(key)?,
        listed_as: key.name_any(),
        status: key.status.as_ref(),
        reference: key.object_ref(&()),
    };
    restart(ctx, &owner).await
}

/// Restart the workloads of `key`'s `spec.secretNamespace` that name it `cluster/<name>`,
/// after its rotation; when to look again.
pub(super) async fn restart_for_cluster_key(ctx: &Context, key: &ClusterApiKey) -> Result<Option<Timestamp>, Error> {
    let mut reference = key.object_ref(&());
    // Cluster-scoped: its Events live in `default`, with its lifecycle's.
    reference.namespace = None;
    let owner = Owner {
        namespace: &key.spec.secret_namespace,
        listed_as: format!("{CLUSTER_OWNER}/{}", key.name_any()),
        status: key.status.as_ref().map(|s| &s.key),
        reference,
    };
    restart(ctx, &owner).await
}

/// The key whose rotation restarts workloads: where they are, how their annotation names it,
/// its lifecycle status, and the object its Events are about.
struct Owner<'a> {
    namespace: &'a str,
    listed_as: String,
    status: Option<&'a ApiKeyStatus>,
    reference: ObjectReference,
}

async fn restart(ctx: &Context, owner: &Owner<'_>) -> Result<Option<Timestamp>, Error> {
    let (namespace, key_name) = (owner.namespace, owner.listed_as.as_str());
    let status = owner.status;
    let swapped_at = status.and_then(|s| s.last_rotated_at.as_ref()).map(|t| t.0);
    let in_grace = status.is_some_and(|s| s.previous_key.is_some());
    if swapped_at.is_none() || !in_grace {
        return Ok(None);
    }
    let mut workloads = Vec::new();
    let listed = async {
        workloads.extend(opted_in::<Deployment>(ctx, namespace, "Deployment").await?);
        workloads.extend(opted_in::<StatefulSet>(ctx, namespace, "StatefulSet").await?);
        workloads.extend(opted_in::<DaemonSet>(ctx, namespace, "DaemonSet").await?);
        Ok::<_, kube::Error>(())
    };
    if let Err(e) = listed.await {
        if matches!(&e, kube::Error::Api(s) if s.code == 403) {
            // Restarts are optional: the rotation itself is done.
            warn!(%namespace, name = %key_name, error = %e, "cannot list workloads to restart; grant the operator list and patch on apps workloads");
            return Ok(None);
        }
        return Err(Error::kube("list workloads")(e));
    }
    let now = (ctx.clock)();
    let owed = restarts(key_name, swapped_at, in_grace, &workloads, ctx.restart_delay, now);
    let stamp = Timestamp::from_second(now.as_second()).unwrap_or(now).to_string();
    for (kind, name) in &owed.now {
        let result = match *kind {
            "Deployment" => restart_one::<Deployment>(ctx, namespace, name, &stamp).await,
            "StatefulSet" => restart_one::<StatefulSet>(ctx, namespace, name, &stamp).await,
            _ => restart_one::<DaemonSet>(ctx, namespace, name, &stamp).await,
        };
        let (reason, kind_of_event, note) = match &result {
            Ok(()) => {
                info!(%namespace, name = %key_name, workload = %name, kind, "workload restarted after rotation");
                (Reason::WorkloadRestarted, EventType::Normal, format!("{kind} {name} restarted after the rotation"))
            }
            Err(e) => {
                warn!(%namespace, name = %key_name, workload = %name, kind, error = %e, "workload restart failed");
                (
                    Reason::WorkloadRestartFailed,
                    EventType::Warning,
                    format!("{kind} {name} could not be restarted: {e}"),
                )
            }
        };
        let event = Event {
            type_: kind_of_event,
            reason: reason.as_str().to_owned(),
            note: Some(super::apply::truncate_note(&note)),
            action: "Restart".to_owned(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &owner.reference).await {
            warn!(name = %key_name, error = %e, "could not publish Event");
        }
        if let Err(e) = result
            && !matches!(&e, kube::Error::Api(s) if s.code == 403 || s.code == 404)
        {
            return Err(Error::kube("restart workload")(e));
        }
    }
    Ok(owed.requeue_at)
}

/// A namespaced workload kind keyward can restart (Deployment, StatefulSet, DaemonSet).
trait WorkloadKind:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> WorkloadKind for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
{
}

/// The workloads of kind `K` in `namespace` that carry [`RESTART_ANNOTATION`].
async fn opted_in<K: WorkloadKind>(
    ctx: &Context,
    namespace: &str,
    kind: &'static str,
) -> Result<Vec<Workload>, kube::Error> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let list = api.list_metadata(&ListParams::default()).await?;
    Ok(list.items.iter().filter_map(|meta: &PartialObjectMeta<K>| workload(kind, meta)).collect())
}

fn workload<K>(kind: &'static str, meta: &PartialObjectMeta<K>) -> Option<Workload> {
    let annotations = meta.metadata.annotations.as_ref()?;
    let keys = Workload::keys_of(annotations.get(RESTART_ANNOTATION)?);
    let restarted_at = annotations.get(RESTARTED_AT_ANNOTATION).and_then(|t| t.parse().ok());
    Some(Workload { kind, name: meta.metadata.name.clone()?, keys, restarted_at })
}

async fn restart_one<K: WorkloadKind>(
    ctx: &Context,
    namespace: &str,
    name: &str,
    stamp: &str,
) -> Result<(), kube::Error> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = json!({
        "metadata": { "annotations": { RESTARTED_AT_ANNOTATION: stamp } },
        "spec": { "template": { "metadata": { "annotations": { RESTARTED_AT_ANNOTATION: stamp } } } },
    });
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
    api.patch(name, &params, &Patch::Merge(patch)).await.map(drop)
}
