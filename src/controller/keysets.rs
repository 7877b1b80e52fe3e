//! The KeySet controller: a key set's access gate, published into its shards and reported on the KeySet.
//!
//! A `KeySet` (namespaced, named like the key set) is owned by platform teams.
//! On every change its key set is rebuilt at once ([`Publisher::publish_reporting`]):
//! a gate that takes access away must not wait for the coalescing window, and
//! lifting it is as urgent for the customer who just paid. The publisher reads
//! the gate itself ([`super::publisher::gate`]), so every rebuild, whoever asks
//! for it, writes the gate in force; this controller only triggers rebuilds
//! and reports them:
//!
//! - status: `publishedAccess` (what the shards carry, hence what verifiers
//!   enforce), `keys`, `observedGeneration` and a `Ready` condition;
//! - an Event on the KeySet when the published access changes (one per
//!   change, never one per key: a gate on 10,000 keys writes one Event);
//! - a Warning Event and `Ready=False` naming the field for bad input: a name
//!   no ApiKey can name as its key set (`metadata.name`), or an access the
//!   types do not know (`spec.access`, only possible past admission), which
//!   is published as `Disabled`.
//!
//! Deleting a KeySet lifts its gate: the deletion is seen in the watch and
//! the set is rebuilt (no object, no gate). A deletion missed while the
//! operator was down is caught by the periodic resync of every key set.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::api::{CONDITION_READY, ConditionUpdate, KeySet, KeySetAccess, KeySetStatus, set_condition};
use crate::keyset::{Access, KeySetId};

use super::{Clock, Error, FIELD_MANAGER, Publisher, events::Recorder, retry_after};

/// How often a KeySet's `keys` count is brought up to date when nothing else changes.
const REFRESH: Duration = Duration::from_secs(300);

/// What a KeySet reconcile needs.
pub struct KeySetContext {
    /// The API client.
    pub client: Client,
    /// The key-set writer.
    pub publisher: Arc<Publisher>,
    /// Events on KeySets.
    pub recorder: Recorder,
    /// The clock, for condition times.
    pub clock: Clock,
}

impl KeySetContext {
    /// What the ApiKey controller's context shares with this one: client, publisher, Events, clock.
    #[must_use]
    pub fn from_context(ctx: &super::Context) -> Arc<KeySetContext> {
        Arc::new(KeySetContext {
            client: ctx.client.clone(),
            publisher: ctx.publisher.clone(),
            recorder: ctx.recorder.clone(),
            clock: ctx.clock.clone(),
        })
    }
}

/// The KeySet controller, sharing `ctx`'s client, publisher, Events and clock, until `shutdown` resolves.
pub fn run(
    ctx: &super::Context,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    run_with(KeySetContext::from_context(ctx), shutdown)
}

async fn run_with(ctx: Arc<KeySetContext>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let (store, writer) = reflector::store();
    let publisher = ctx.publisher.clone();
    let sets = watcher(Api::<KeySet>::all(ctx.client.clone()), watcher::Config::default())
        .default_backoff()
        .inspect_ok(move |event| {
            // The Controller never sees a deleted object: rebuild its set here, without the gate.
            if let watcher::Event::Delete(set) = event
                && let Some(id) = key_set_id(set)
            {
                info!(namespace = %id.namespace, keyset = %id.name, "KeySet deleted; key set rebuilt without a gate");
                publisher.request(id);
            }
        })
        .reflect(writer)
        .applied_objects();
    Controller::for_stream(sets, store)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "KeySet controller error");
            }
        })
        .await;
}

/// The key set a KeySet object governs: same namespace, same name.
fn key_set_id(set: &KeySet) -> Option<KeySetId> {
    Some(KeySetId { namespace: set.namespace()?, name: set.name_any() })
}

/// Whether `name` is one ApiKey `spec.keySet` accepts (the CRD's pattern and length).
fn valid_key_set_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 40
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes.iter().all(|b| edge(b) || *b == b'-')
}

/// The KeySet's spelling of a published gate.
fn spelled(access: Access) -> KeySetAccess {
    match access {
        Access::Enabled => KeySetAccess::Enabled,
        Access::PaymentRequired => KeySetAccess::PaymentRequired,
        Access::Disabled => KeySetAccess::Disabled,
    }
}

/// What verifiers answer every key of a set with this gate, for conditions and Events.
fn answer(access: Access) -> &'static str {
    match access {
        Access::Enabled => "each key is judged on its own",
        Access::PaymentRequired => "verifiers answer every key with 402 payment_required",
        Access::Disabled => "verifiers answer every key with 403 access_disabled",
    }
}

/// Reconcile one KeySet: rebuild its key set, then report what was published.
pub async fn reconcile(set: Arc<KeySet>, ctx: Arc<KeySetContext>) -> Result<Action, Error> {
    let Some(id) = key_set_id(&set) else { return Err(Error::MissingField("metadata.namespace")) };
    if !valid_key_set_name(&id.name) {
        let problem = "metadata.name is not a key-set name (at most 40 lowercase letters, digits and '-', alphanumeric at both ends), so no ApiKey can name it in spec.keySet; nothing is published";
        report_invalid(&ctx, &set, "InvalidName", problem).await?;
        return Ok(Action::await_change());
    }
    let declared = KeySetAccess::parse(&set.spec.access);
    let published = ctx.publisher.publish_reporting(&id).await?;
    let previous = set.status.as_ref().and_then(|s| s.published_access.clone());
    let now_spelled = spelled(published.access).as_str();
    if previous.as_deref() != Some(now_spelled) {
        let was = previous.as_deref().unwrap_or("none");
        info!(namespace = %id.namespace, keyset = %id.name, from = was, to = now_spelled, keys = published.keys, "key-set access published");
        let note = format!(
            "key set published with access {now_spelled} (was {was}): {}; keys and tokens are unchanged",
            answer(published.access)
        );
        let reason = match published.access {
            Access::Enabled => "AccessEnabled",
            Access::PaymentRequired => "PaymentRequired",
            Access::Disabled => "AccessDisabled",
        };
        event(&ctx, &set, EventType::Normal, reason, note).await;
    }
    let ready = if declared.is_some() {
        let message =
            format!("published with access {now_spelled} to {} ApiKeys: {}", published.keys, answer(published.access));
        ConditionUpdate { type_: CONDITION_READY, status: "True", reason: "Published", message }
    } else {
        // Published as Disabled by the publisher's `gate_of`: a gate nobody can read never opens the set.
        let message = "spec.access must be Enabled, PaymentRequired or Disabled; the key set is published as Disabled until it is fixed".to_owned();
        if !already_reported(&set, "InvalidAccess") {
            event(&ctx, &set, EventType::Warning, "InvalidAccess", message.clone()).await;
        }
        ConditionUpdate { type_: CONDITION_READY, status: "False", reason: "InvalidAccess", message }
    };
    let mut status = set.status.clone().unwrap_or_default();
    status.published_access = Some(now_spelled.to_owned());
    status.keys = Some(u32::try_from(published.keys).unwrap_or(u32::MAX));
    write_status(&ctx, &set, status, ready).await?;
    Ok(Action::requeue(REFRESH))
}

/// `Ready=False` with `reason` and a Warning Event naming the field; nothing is published.
async fn report_invalid(ctx: &KeySetContext, set: &KeySet, reason: &str, problem: &str) -> Result<(), Error> {
    if !already_reported(set, reason) {
        event(ctx, set, EventType::Warning, reason, problem.to_owned()).await;
    }
    let ready = ConditionUpdate { type_: CONDITION_READY, status: "False", reason, message: problem.to_owned() };
    write_status(ctx, set, set.status.clone().unwrap_or_default(), ready).await
}

/// Whether status already reports `reason` for this generation (so its Warning Event was sent).
fn already_reported(set: &KeySet, reason: &str) -> bool {
    set.status
        .as_ref()
        .and_then(|s| s.conditions.first())
        .is_some_and(|c| c.reason == reason && c.observed_generation == set.metadata.generation)
}

async fn write_status(
    ctx: &KeySetContext,
    set: &KeySet,
    mut status: KeySetStatus,
    ready: ConditionUpdate<'_>,
) -> Result<(), Error> {
    let generation = set.metadata.generation;
    set_condition(&mut status.conditions, ready, generation, (ctx.clock)());
    status.observed_generation = generation;
    if set.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let namespace = set.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
    Api::<KeySet>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(&set.name_any(), &params, &Patch::Merge(json!({ "status": status })))
        .await
        .map_err(Error::kube("patch KeySet status"))?;
    Ok(())
}

async fn event(ctx: &KeySetContext, set: &KeySet, type_: EventType, reason: &str, note: String) {
    let event =
        Event { type_, reason: reason.to_owned(), note: Some(note), action: "Publish".to_owned(), secondary: None };
    // An Event that cannot be written must not stop the gate.
    if let Err(e) = ctx.recorder.publish(&event, &set.object_ref(&())).await {
        warn!(name = %set.name_any(), reason, error = %e, "could not publish Event");
    }
}

/// What to do after a failed reconcile: the same retry policy as for ApiKeys.
#[allow(clippy::needless_pass_by_value)] // kube-runtime's Controller::run fixes this signature.
fn error_policy(set: Arc<KeySet>, error: &Error, _ctx: Arc<KeySetContext>) -> Action {
    warn!(namespace = set.namespace().unwrap_or_default(), name = %set.name_any(), error = %error, kind = error.label(), "KeySet reconcile failed");
    retry_after(error)
}
