//! What each webhook's deliveries came to: metrics at once, status and Events at most once per interval.
//!
//! Outcomes and pending deliveries ([`Queue`]) are kept in memory per webhook
//! and marked dirty; the router's flush writes the dirty ones' status (a JSON
//! merge patch on the status subresource) and, when `Ready` flips, one Event:
//! Warning `DeliveryFailing` or Normal `DeliveryRecovered`; when notices were
//! dropped over the bound, a Warning `PendingDropped`. So a receiver that is
//! down for an hour costs one status write per interval and one Event, not
//! one per notice or per attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::warn;

use crate::api::{
    ApiKeyWebhook, ApiKeyWebhookStatus, CONDITION_READY, ConditionUpdate, PendingDelivery, set_condition,
};

use super::super::events::Recorder;
use super::super::{FIELD_MANAGER, Metrics};
use super::deliver::Failure;
use super::pending::{Queue, well_formed};

/// One webhook's outcomes since the operator started leading.
#[derive(Debug, Clone, Default)]
struct Outcomes {
    consecutive_failures: u32,
    last_at: Option<Timestamp>,
    last_result: String,
    last_success_at: Option<Timestamp>,
    /// `None` while the last notice was delivered; else the condition's reason and message.
    failing: Option<(&'static str, String)>,
    /// A notice was delivered or given up since this leader started: the whole status is news,
    /// not only `pending` (whose writes must not claim a delivery nobody made).
    decided: bool,
    /// Notices waiting for a (further) attempt.
    pending: Queue,
    /// Pending notices dropped over the bound since the last flush.
    dropped: usize,
    dirty: bool,
}

/// Outcomes of every webhook, and what reports them.
pub struct Tracker {
    outcomes: Mutex<HashMap<ObjectRef<ApiKeyWebhook>, Outcomes>>,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    /// Pending notices one webhook keeps at most.
    max_pending: usize,
}

impl Tracker {
    pub(super) fn new(metrics: Arc<Metrics>, recorder: Recorder, max_pending: usize) -> Tracker {
        Tracker { outcomes: Mutex::new(HashMap::new()), metrics, recorder, max_pending }
    }

    fn update<T>(&self, hook: &ApiKeyWebhook, change: impl FnOnce(&mut Outcomes) -> T) -> T {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
        let reference = ObjectRef::from_obj(hook);
        // Deleted and created again under its name: the old object's pending notices are not this one's.
        if outcomes.get_key_value(&reference).is_some_and(|(old, _)| old.extra.uid != reference.extra.uid)
            && let Some(mut old) = outcomes.remove(&reference)
        {
            old.pending.abort_all();
        }
        let entry = outcomes.entry(reference).or_insert_with(|| stored(hook));
        let result = change(entry);
        entry.dirty = true;
        self.metrics.webhook_pending(&hook.namespace().unwrap_or_default(), &hook.name_any(), entry.pending.len());
        result
    }

    /// The deliveries a previous leader left pending for `hook`, now this leader's to resume.
    pub(super) fn resume(&self, hook: &ApiKeyWebhook) -> Vec<PendingDelivery> {
        let (stored, refused): (Vec<PendingDelivery>, Vec<PendingDelivery>) =
            hook.status.as_ref().map(|s| s.pending.clone()).unwrap_or_default().into_iter().partition(well_formed);
        for entry in &refused {
            warn!(namespace = hook.namespace().as_deref().unwrap_or(""), webhook = %hook.name_any(), message_id = %entry.id, "a pending notice whose body is not a notice of its type is dropped");
        }
        if stored.is_empty() && refused.is_empty() {
            return stored;
        }
        self.update(hook, |o| {
            o.pending = Queue::stored(&stored);
            o.pending.entries()
        })
    }

    /// A new notice for `hook`; `false` when it is pending already (a step planned again).
    pub(super) fn queued(&self, hook: &ApiKeyWebhook, entry: PendingDelivery) -> bool {
        let dropped = self.update(hook, |o| {
            let dropped = o.pending.push(entry, self.max_pending);
            o.dropped += dropped.unwrap_or(0);
            dropped
        });
        if let Some(dropped) = dropped.filter(|d| *d > 0) {
            let (namespace, name) = (hook.namespace().unwrap_or_default(), hook.name_any());
            warn!(%namespace, webhook = %name, dropped, max = self.max_pending, "too many notices pending: the oldest dropped");
            self.metrics.webhook_pending_dropped(&namespace, &name, dropped);
        }
        dropped.is_some()
    }

    /// The task retrying notice `id` for `hook` (so that dropping it stops it).
    pub(super) fn attach(&self, hook: &ApiKeyWebhook, id: &str, task: tokio::task::AbortHandle) {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(o) = outcomes.get_mut(&ObjectRef::from_obj(hook)) {
            o.pending.attach(id, task);
        }
    }

    /// Notice `id` failed attempt number `attempts` at `hook`; the next is due at `next`.
    pub(super) fn retrying(&self, hook: &ApiKeyWebhook, id: &str, attempts: u32, next: Timestamp) {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(o) = outcomes.get_mut(&ObjectRef::from_obj(hook))
            && o.pending.retrying(id, attempts, next)
        {
            o.dirty = true;
        }
    }

    /// An attempt read `hook`'s signing secret and sealed notice `id` with it (written with the
    /// next status write, so a later leader can check the entry is the operator's).
    pub(super) fn sealed(&self, hook: &ApiKeyWebhook, id: &str, seal: String) {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(o) = outcomes.get_mut(&ObjectRef::from_obj(hook))
            && o.pending.sealed(id, seal)
        {
            o.dirty = true;
        }
    }

    /// Notice `id` reached `hook`.
    pub(super) fn delivered(&self, hook: &ApiKeyWebhook, id: &str, now: Timestamp) {
        self.metrics.webhook_delivery(&hook.namespace().unwrap_or_default(), &hook.name_any(), true);
        self.update(hook, |o| {
            o.pending.remove(id);
            o.decided = true;
            o.consecutive_failures = 0;
            o.last_at = Some(now);
            "Delivered".clone_into(&mut o.last_result);
            o.last_success_at = Some(now);
            o.failing = None;
        });
    }

    /// A notice to `hook` was given up after `attempts` attempts.
    pub(super) fn failed(
        &self,
        hook: &ApiKeyWebhook,
        message_id: &str,
        attempts: u32,
        failure: &Failure,
        now: Timestamp,
    ) {
        self.metrics.webhook_delivery(&hook.namespace().unwrap_or_default(), &hook.name_any(), false);
        let message = format!("Notice {message_id} given up after {attempts} attempt(s): {failure}");
        self.update(hook, |o| {
            o.pending.remove(message_id);
            o.decided = true;
            o.consecutive_failures = o.consecutive_failures.saturating_add(1);
            o.last_at = Some(now);
            o.last_result = failure.to_string();
            o.failing = Some((failure.reason(), message));
        });
    }

    /// Forget the webhooks gone from the cache (stopping their retries); write the status of every
    /// webhook with news, and an Event for each whose `Ready` flipped or whose notices were dropped.
    pub(super) async fn flush(&self, client: &Client, store: &Store<ApiKeyWebhook>, now: Timestamp) {
        // Gone, or deleted and created again under its name: its pending notices go with it.
        let present = |r: &ObjectRef<ApiKeyWebhook>| store.get(r).is_some_and(|h| h.metadata.uid == r.extra.uid);
        let (gone, dirty) = {
            let mut outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
            let gone: Vec<ObjectRef<ApiKeyWebhook>> = outcomes.keys().filter(|r| !present(r)).cloned().collect();
            let dirty: Vec<(ObjectRef<ApiKeyWebhook>, Outcomes)> = outcomes
                .iter_mut()
                .filter(|(r, o)| o.dirty && present(r))
                .map(|(r, o)| {
                    o.dirty = false;
                    let taken = o.clone();
                    o.dropped = 0;
                    (r.clone(), taken)
                })
                .collect();
            (gone, dirty)
        };
        for reference in gone {
            self.forget(&reference);
        }
        for (reference, outcomes) in dirty {
            let Some(hook) = store.get(&reference) else { continue };
            if let Err(e) = self.write(client, &hook, &outcomes, now).await {
                match e {
                    kube::Error::Api(status) if status.code == 404 => self.forget(&reference),
                    e => {
                        warn!(namespace = reference.namespace.as_deref().unwrap_or(""), webhook = %reference.name, error = %e, "could not write webhook status");
                        self.update(&hook, |o| o.dropped += outcomes.dropped);
                    }
                }
            }
        }
    }

    fn forget(&self, reference: &ObjectRef<ApiKeyWebhook>) {
        if let Some(mut gone) = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner).remove(reference) {
            gone.pending.abort_all();
        }
        self.metrics.webhook_removed(reference.namespace.as_deref().unwrap_or(""), &reference.name);
    }

    async fn write(
        &self,
        client: &Client,
        hook: &ApiKeyWebhook,
        outcomes: &Outcomes,
        now: Timestamp,
    ) -> Result<(), kube::Error> {
        let old = hook.status.clone().unwrap_or_default();
        let was_ready = old.conditions.iter().find(|c| c.type_ == CONDITION_READY).map(|c| c.status == "True");
        let api: Api<ApiKeyWebhook> = Api::namespaced(client.clone(), &hook.namespace().unwrap_or_default());
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
        api.patch_status(&hook.name_any(), &params, &Patch::Merge(status_patch(hook, outcomes, now))).await?;
        let ready = outcomes.failing.is_none();
        if outcomes.decided && was_ready != Some(ready) && !(was_ready.is_none() && ready) {
            self.announce(hook, outcomes).await;
        }
        if outcomes.dropped > 0 {
            self.announce_dropped(hook, outcomes.dropped).await;
        }
        Ok(())
    }

    /// The Event of notices dropped over the bound.
    async fn announce_dropped(&self, hook: &ApiKeyWebhook, dropped: usize) {
        let event = Event {
            type_: EventType::Warning,
            reason: "PendingDropped".to_owned(),
            note: Some(format!(
                "{dropped} undelivered notice(s) dropped, oldest first: more than {} were waiting (--webhook-max-pending)",
                self.max_pending
            )),
            action: "Deliver".to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &hook.object_ref(&())).await {
            warn!(webhook = %hook.name_any(), error = %e, "could not publish Event");
        }
    }

    /// The Event of a `Ready` flip (a first delivery that works needs none).
    async fn announce(&self, hook: &ApiKeyWebhook, outcomes: &Outcomes) {
        let event = match &outcomes.failing {
            Some((_, message)) => Event {
                type_: EventType::Warning,
                reason: "DeliveryFailing".to_owned(),
                note: Some(super::super::apply::truncate_note(message)),
                action: "Deliver".to_owned(),
                secondary: None,
            },
            None => Event {
                type_: EventType::Normal,
                reason: "DeliveryRecovered".to_owned(),
                note: Some("Notices are delivered again".to_owned()),
                action: "Deliver".to_owned(),
                secondary: None,
            },
        };
        if let Err(e) = self.recorder.publish(&event, &hook.object_ref(&())).await {
            warn!(webhook = %hook.name_any(), error = %e, "could not publish Event");
        }
    }
}

/// Outcomes as the stored status last said them, so a new leader counts on from there.
fn stored(hook: &ApiKeyWebhook) -> Outcomes {
    let status = hook.status.clone().unwrap_or_default();
    Outcomes {
        consecutive_failures: status.consecutive_failures,
        last_at: status.last_delivery_at.map(|t| t.0),
        last_result: status.last_delivery_result.unwrap_or_default(),
        last_success_at: status.last_success_at.map(|t| t.0),
        failing: None,
        decided: false,
        pending: Queue::default(),
        dropped: 0,
        dirty: false,
    }
}

/// The merge patch of `hook`'s status: the whole status once a notice was delivered or given up,
/// else `pending` only. An empty `pending` is `null`, which removes the list.
fn status_patch(hook: &ApiKeyWebhook, outcomes: &Outcomes, now: Timestamp) -> serde_json::Value {
    let pending = outcomes.pending.entries();
    let pending = if pending.is_empty() { serde_json::Value::Null } else { json!(pending) };
    if !outcomes.decided {
        return json!({ "status": { "pending": pending } });
    }
    let mut status = json!(status_of(hook, outcomes, now));
    status["pending"] = pending;
    json!({ "status": status })
}

/// The status `outcomes` give `hook`.
fn status_of(hook: &ApiKeyWebhook, outcomes: &Outcomes, now: Timestamp) -> ApiKeyWebhookStatus {
    let mut conditions = hook.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let update = match &outcomes.failing {
        None => ConditionUpdate {
            type_: CONDITION_READY,
            status: "True",
            reason: "Delivered",
            message: "The last notice was delivered".to_owned(),
        },
        Some((reason, message)) => {
            ConditionUpdate { type_: CONDITION_READY, status: "False", reason, message: message.clone() }
        }
    };
    set_condition(&mut conditions, update, hook.metadata.generation, now);
    ApiKeyWebhookStatus {
        conditions,
        observed_generation: hook.metadata.generation,
        last_delivery_at: outcomes.last_at.map(Time),
        last_delivery_result: Some(outcomes.last_result.clone()).filter(|r| !r.is_empty()),
        last_success_at: outcomes.last_success_at.map(Time),
        consecutive_failures: outcomes.consecutive_failures,
        pending: outcomes.pending.entries(),
    }
}
