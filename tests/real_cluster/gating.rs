//! Plan gating on a real API server: the KeySet CRD as shipped (admission included), the
//! operator as its ServiceAccount with the shipped RBAC, and a `--watch-keyset` verifier
//! answering 402 while the set is gated and 200, for the same token, once the gate is lifted.

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use keyward::api::KeySet;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

use super::lifecycle::{assert_operator_log_clean, create, ready_partner, secret_token, setup};
use super::support::{apply, eventually, start_watch_verifier, verify};

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn admission_refuses_an_unknown_access_and_a_name_no_apikey_can_use() {
    let ns = "gate-admission";
    let (plane, _client) = setup(ns).await;
    for (yaml, field) in [
        (
            "apiVersion: keyward.dev/v1alpha1\nkind: KeySet\nmetadata: {name: default}\nspec: {access: Free}\n",
            "spec.access",
        ),
        (
            "apiVersion: keyward.dev/v1alpha1\nkind: KeySet\nmetadata: {name: paid.eu}\nspec: {access: Disabled}\n",
            "metadata.name",
        ),
    ] {
        let output = apply(plane, ns, yaml);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "admission accepted:\n{yaml}");
        assert!(stderr.contains(field), "the refusal names {field}: {stderr}");
    }
    let output =
        apply(plane, ns, "apiVersion: keyward.dev/v1alpha1\nkind: KeySet\nmetadata: {name: default}\nspec: {}\n");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let sets: Api<KeySet> = Api::namespaced(super::control_plane::client_from(plane.kubeconfig()).await, ns);
    assert_eq!(sets.get("default").await.unwrap().spec.access, "Enabled", "access defaults to Enabled");
}

#[tokio::test]
async fn the_operator_gates_a_set_the_verifier_answers_402_then_200_for_the_same_token() {
    let ns = "gate-life";
    let (plane, client) = setup(ns).await;
    let token = ready_partner(plane, &client, ns).await;
    let (verifier, addr) = start_watch_verifier(plane, ns);
    eventually("the verifier to allow the key", MINUTE, || async {
        (verify(addr, &token).await == Some(200)).then_some(())
    })
    .await;

    create(
        plane,
        ns,
        "apiVersion: keyward.dev/v1alpha1\nkind: KeySet\nmetadata: {name: default}\nspec: {access: PaymentRequired}\n",
    );
    eventually("402 for the gated key", MINUTE, || async { (verify(addr, &token).await == Some(402)).then_some(()) })
        .await;
    let sets: Api<KeySet> = Api::namespaced(client.clone(), ns);
    let status = eventually("the KeySet's status", MINUTE, || async {
        sets.get("default").await.unwrap().status.filter(|s| s.published_access.as_deref() == Some("PaymentRequired"))
    })
    .await;
    assert_eq!(status.keys, Some(1));
    assert_eq!((status.conditions[0].type_.as_str(), status.conditions[0].status.as_str()), ("Ready", "True"));
    let table = plane.kubectl().args(["get", "keysets", "-n", ns]).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("ACCESS") && table.contains("PaymentRequired"), "printer columns: {table}");

    sets.patch("default", &PatchParams::default(), &Patch::Merge(json!({"spec": {"access": "Enabled"}})))
        .await
        .unwrap();
    eventually("200 again once the gate is lifted", MINUTE, || async {
        (verify(addr, &token).await == Some(200)).then_some(())
    })
    .await;
    assert_eq!(secret_token(&client, ns, "partner-apikey").await.unwrap(), token, "the same token");

    // The KeySet's Event follows the rebuild the verifier already answers from: wait for it.
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    eventually("the KeySet's PaymentRequired and AccessEnabled Events", MINUTE, || async {
        let reasons: Vec<String> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("KeySet"))
            .filter_map(|e| e.reason)
            .collect();
        (reasons.contains(&"PaymentRequired".to_owned()) && reasons.contains(&"AccessEnabled".to_owned())).then_some(())
    })
    .await;
    let log = verifier.log_text();
    assert!(!log.contains(token.expose()), "no token in the verifier's log");
    assert_operator_log_clean(&[&token]);
}
