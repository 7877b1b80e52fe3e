//! What each webhook's deliveries came to: metrics at once, status and Events at most once per interval.
//!
//! Outcomes are kept in memory per webhook and marked dirty; the router's
//! flush writes the dirty ones' status (a JSON merge patch on the status
//! subresource) and, when `Ready` flips, one Event: Warning `DeliveryFailing`
//! or Normal `DeliveryRecovered`. So a receiver that is down for an hour
//! costs one status write per interval and one Event, not one per notice.

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

use crate::api::{ApiKeyWebhook, ApiKeyWebhookStatus, CONDITION_READY, ConditionUpdate, set_condition};

use super::super::events::Recorder;
use super::super::{FIELD_MANAGER, Metrics};
use super::deliver::Failure;

/// One webhook's outcomes since the operator started leading.
#[derive(Debug, Clone, Default)]
struct Outcomes {
    consecutive_failures: u32,
    last_at: Option<Timestamp>,
    last_result: String,
    last_success_at: Option<Timestamp>,
    /// `None` while the last notice was delivered; else the condition's reason and message.
    failing: Option<(&'static str, String)>,
    dirty: bool,
}

/// Outcomes of every webhook, and what reports them.
pub struct Tracker {
    outcomes: Mutex<HashMap<ObjectRef<ApiKeyWebhook>, Outcomes>>,
    metrics: Arc<Metrics>,
    recorder: Recorder,
}

impl Tracker {
    pub(super) fn new(metrics: Arc<Metrics>, recorder: Recorder) -> Tracker {
        Tracker { outcomes: Mutex::new(HashMap::new()), metrics, recorder }
    }

    fn update(&self, hook: &ApiKeyWebhook, change: impl FnOnce(&mut Outcomes)) {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = outcomes.entry(ObjectRef::from_obj(hook)).or_insert_with(|| stored(hook));
        change(entry);
        entry.dirty = true;
    }

    /// A notice reached `hook`.
    pub(super) fn delivered(&self, hook: &ApiKeyWebhook, now: Timestamp) {
        self.metrics.webhook_delivery(&hook.namespace().unwrap_or_default(), &hook.name_any(), true);
        self.update(hook, |o| {
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
            o.consecutive_failures = o.consecutive_failures.saturating_add(1);
            o.last_at = Some(now);
            o.last_result = failure.to_string();
            o.failing = Some((failure.reason(), message));
        });
    }

    /// Write the status of every webhook with news, and an Event for each whose `Ready` flipped.
    pub(super) async fn flush(&self, client: &Client, store: &Store<ApiKeyWebhook>, now: Timestamp) {
        let dirty: Vec<(ObjectRef<ApiKeyWebhook>, Outcomes)> = {
            let mut outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
            outcomes
                .iter_mut()
                .filter(|(_, o)| o.dirty)
                .map(|(r, o)| {
                    o.dirty = false;
                    (r.clone(), o.clone())
                })
                .collect()
        };
        for (reference, outcomes) in dirty {
            let Some(hook) = store.get(&reference) else {
                self.forget(&reference);
                continue;
            };
            if let Err(e) = self.write(client, &hook, &outcomes, now).await {
                match e {
                    kube::Error::Api(status) if status.code == 404 => self.forget(&reference),
                    e => {
                        warn!(namespace = reference.namespace.as_deref().unwrap_or(""), webhook = %reference.name, error = %e, "could not write webhook status");
                        self.update(&hook, |_| {});
                    }
                }
            }
        }
    }

    fn forget(&self, reference: &ObjectRef<ApiKeyWebhook>) {
        self.outcomes.lock().unwrap_or_else(PoisonError::into_inner).remove(reference);
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
        let status = status_of(hook, outcomes, now);
        let api: Api<ApiKeyWebhook> = Api::namespaced(client.clone(), &hook.namespace().unwrap_or_default());
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
        api.patch_status(&hook.name_any(), &params, &Patch::Merge(json!({ "status": status }))).await?;
        let ready = outcomes.failing.is_none();
        if was_ready != Some(ready) && !(was_ready.is_none() && ready) {
            self.announce(hook, outcomes).await;
        }
        Ok(())
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
        dirty: false,
    }
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
    }
}
