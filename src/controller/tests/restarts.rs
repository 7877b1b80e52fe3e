//! Workloads that opt in are restarted once per rotation, after the swap; others never.

use jiff::SignedDuration;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::plan::restarts::RESTARTED_AT_ANNOTATION;
use crate::plan::{DATA_TOKEN, Settings};

use super::examples::CRM;
use super::harness::{Harness, NS, harness};

fn deployment(name: &str, opt_in: Option<&str>) -> Deployment {
    let annotations = opt_in.map(|keys| json!({ "keyward.dev/restart-on-rotation": keys }));
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": NS, "annotations": annotations },
        "spec": {
            "selector": { "matchLabels": { "app": name } },
            "template": { "metadata": { "labels": { "app": name } }, "spec": { "containers": [{ "name": "app", "image": "app" }] } },
        },
    }))
    .unwrap()
}

/// The restart stamp in `name`'s pod template, if any.
async fn stamp(h: &Harness, name: &str) -> Option<String> {
    let d = Api::<Deployment>::namespaced(h.client.clone(), NS).get(name).await.unwrap();
    d.spec?.template.metadata?.annotations?.get(RESTARTED_AT_ANNOTATION).cloned()
}

/// Rotates `name` by annotation and settles until the Secret holds the new token.
async fn rotate(h: &Harness, name: &str, value: &str) {
    let annotate = json!({ "metadata": { "annotations": { crate::api::ROTATE_ANNOTATION: value } } });
    h.keys().patch(name, &PatchParams::default(), &Patch::Merge(&annotate)).await.unwrap();
    let before = h.secret_token(&format!("{name}-apikey"), DATA_TOKEN).await;
    for step in [0, 5, 120] {
        h.advance(SignedDuration::from_secs(step));
        h.settle(name).await;
    }
    assert_ne!(h.secret_token(&format!("{name}-apikey"), DATA_TOKEN).await, before, "swapped");
}

#[tokio::test]
async fn an_opted_in_deployment_is_restarted_once_after_the_swap_and_others_never() {
    let h = harness(Settings::default()).await;
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), NS);
    for d in
        [deployment("uses-crm", Some("crm")), deployment("bystander", None), deployment("uses-other", Some("other"))]
    {
        deployments.create(&PostParams::default(), &d).await.unwrap();
    }
    h.create(CRM).await;
    h.settle_ready("crm").await;
    assert_eq!(stamp(&h, "uses-crm").await, None, "creating a key restarts nothing");

    rotate(&h, "crm", "first").await;
    assert_eq!(stamp(&h, "uses-crm").await, None, "not before the restart delay");
    h.advance(SignedDuration::from_secs(10));
    h.settle("crm").await;

    let first = stamp(&h, "uses-crm").await.expect("restarted after the delay");
    assert_eq!((stamp(&h, "bystander").await, stamp(&h, "uses-other").await), (None, None));
    assert!(h.event_reasons().await.contains(&"WorkloadRestarted".to_owned()));
    let writes = h.write_count();
    h.advance(SignedDuration::from_mins(5));
    h.settle("crm").await;
    assert_eq!(stamp(&h, "uses-crm").await, Some(first.clone()), "once per rotation");
    assert_eq!(h.write_count(), writes, "a restart done writes nothing more");

    h.advance(SignedDuration::from_hours(2)); // the grace period ends
    h.settle("crm").await;
    rotate(&h, "crm", "second").await;
    h.advance(SignedDuration::from_secs(10));
    h.settle("crm").await;
    assert_ne!(stamp(&h, "uses-crm").await, Some(first), "the next rotation restarts it again");
}

#[tokio::test]
async fn two_keys_swapped_before_the_restart_is_due_restart_a_workload_once() {
    let h = harness(Settings::default()).await;
    Api::<Deployment>::namespaced(h.client.clone(), NS)
        .create(&PostParams::default(), &deployment("uses-both", Some("crm, billing")))
        .await
        .unwrap();
    h.create(CRM).await;
    h.create(&CRM.replace("name: crm", "name: billing")).await;
    h.settle_ready("crm").await;
    h.settle_ready("billing").await;

    rotate(&h, "crm", "r").await;
    h.advance(SignedDuration::from_secs(4));
    rotate(&h, "billing", "r").await;
    h.advance(SignedDuration::from_secs(10));
    h.settle("crm").await;
    let stamped = stamp(&h, "uses-both").await.expect("restarted");
    h.settle("billing").await;

    assert_eq!(stamp(&h, "uses-both").await, Some(stamped), "one restart for both swaps");
    let restarts = h.event_reasons().await.iter().filter(|r| *r == "WorkloadRestarted").count();
    assert_eq!(restarts, 1);
}
