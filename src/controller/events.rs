//! Kubernetes Events for lifecycle steps, written without kube-runtime's caching `Recorder`.
//!
//! kube's `Recorder` keeps every Event it sent for six minutes, so that a
//! repeat becomes a patch of the first one's `series` count. With 10,000 keys
//! created at once that cache held 10,000 Events and was the operator's
//! largest single heap consumer (BENCHMARKS.md). keyward plans an Event per
//! lifecycle transition, so repeats are rare: each Event is created, as
//! kube's `Recorder` creates a first one (same name, fields and API group),
//! and nothing is kept. A repeat is a new Event object, not a series.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Api, Client};

/// Writes events.k8s.io/v1 Events for one reporting controller.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    reporter: Reporter,
}

impl Recorder {
    /// A recorder reporting as `reporter`.
    #[must_use]
    pub fn new(client: Client, reporter: Reporter) -> Recorder {
        Recorder { client, reporter }
    }

    /// Create `event` about the object `reference` names, in its namespace.
    pub async fn publish(&self, event: &Event, reference: &ObjectReference) -> Result<(), kube::Error> {
        // Not the reconcile's injected clock: the name must be unique per
        // object even while a test holds that clock still, as kube's
        // `Recorder` makes it from the real time.
        let now = crate::runtime::clock::now();
        let controller = &self.reporter.controller;
        let object = K8sEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference.clone()),
            note: event.note.clone(),
            metadata: ObjectMeta {
                namespace: reference.namespace.clone(),
                name: Some(format!("{}.{:x}", reference.name.as_ref().unwrap_or(controller), now.as_nanosecond())),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(controller.clone()),
            reporting_instance: Some(self.reporter.instance.clone().unwrap_or_else(|| controller.clone())),
            type_: Some(match event.type_ {
                EventType::Normal => "Normal".to_owned(),
                EventType::Warning => "Warning".to_owned(),
            }),
            related: event.secondary.clone(),
            ..K8sEvent::default()
        };
        let namespace = reference.namespace.as_deref().unwrap_or("default");
        Api::<K8sEvent>::namespaced(self.client.clone(), namespace).create(&PostParams::default(), &object).await?;
        Ok(())
    }
}
