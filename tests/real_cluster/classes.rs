//! ApiKeyClasses on the real API server: the ValidatingAdmissionPolicy of
//! `manifests/classes/` judges the shared table (`tests/classes/cases.yaml`) as the
//! operator's rules do (tests/classes.rs), with the message a user sees; a key that broke
//! its class after the class tightened can still be labelled and deleted, not edited.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use keyward::api::{ApiKey, ApiKeyClass};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::control_plane::client_from;
use super::support::{cluster_with_manifests, eventually};

#[path = "../classes/table.rs"]
mod table;

/// What the API server says to a create (a dry run unless `store`): `Ok` or its message.
async fn create(client: &Client, key: &ApiKey, store: bool) -> Result<(), String> {
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), key.metadata.namespace.as_deref().unwrap());
    let mut key = key.clone();
    key.metadata.creation_timestamp = None; // the server sets it
    let params = PostParams { dry_run: !store, ..PostParams::default() };
    match keys.create(&params, &key).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err(format!("{} {}: {}", status.code, status.reason, status.message)),
        Err(e) => Err(format!("error {e}")),
    }
}

/// The table's namespaces (labelled) and classes, and the policy in force.
async fn install_table(client: &Client, table: &table::Table) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for (name, labels) in &table.namespaces {
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        namespaces.create(&PostParams::default(), &namespace).await.unwrap();
    }
    let classes: Api<ApiKeyClass> = Api::all(client.clone());
    for class in table.class_objects() {
        classes.create(&PostParams::default(), &class).await.unwrap();
    }
    // Policies, bindings and params reach the admission plugin through informers: wait for a refusal.
    let probe = table.cases.iter().position(|c| !c.refused.is_empty()).unwrap();
    eventually("the class policy refuses a key", Duration::from_secs(60), || async {
        create(client, &table.cases[probe].key(probe, Timestamp::now()), false).await.err()
    })
    .await;
}

#[tokio::test]
async fn the_api_servers_policy_and_the_operator_agree_on_every_shared_class_case() {
    let plane = cluster_with_manifests();
    let client = client_from(plane.kubeconfig()).await;
    let table = table::table();
    install_table(&client, &table).await;

    let mut disagreements = Vec::new();
    for (index, case) in table.cases.iter().enumerate() {
        let outcome = create(&client, &case.key(index, Timestamp::now()), false).await;
        match (outcome, case.refused.first()) {
            (Ok(()), None) => {}
            (Ok(()), Some(expected)) => disagreements.push(format!("{}: accepted, expected {expected:?}", case.name)),
            (Err(message), None) => {
                disagreements.push(format!("{}: refused ({message}), expected acceptance", case.name))
            }
            (Err(message), Some(expected)) => {
                // What `kubectl apply` prints: the policy, the binding and the first rule broken.
                let shown = format!(
                    "422 Invalid: ValidatingAdmissionPolicy 'keyward-apikey-class' with binding 'keyward-apikey-class' denied request: {expected}"
                );
                if !message.ends_with(&shown[shown.find("ValidatingAdmissionPolicy").unwrap()..])
                    || !message.starts_with("422 Invalid")
                {
                    disagreements
                        .push(format!("{}: the API server says {message:?}, expected {expected:?}", case.name));
                }
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "the API server's policy disagrees with the table:\n{}",
        disagreements.join("\n")
    );
}

#[tokio::test]
async fn a_key_broken_by_a_narrowed_class_can_be_labelled_and_deleted_but_not_edited() {
    let plane = cluster_with_manifests();
    let client = client_from(plane.kubeconfig()).await;
    let ns = "class-narrowing";
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    namespaces.create(&PostParams::default(), &namespace).await.unwrap();
    let classes: Api<ApiKeyClass> = Api::all(client.clone());
    let class: ApiKeyClass = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyClass", "metadata": {"name": "narrowing"},
        "spec": {"allowedScopes": [{"resource": "orders", "actions": ["read", "write"]}]},
    }))
    .unwrap();
    classes.create(&PostParams::default(), &class).await.unwrap();
    let key: ApiKey = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey", "metadata": {"name": "writer", "namespace": ns},
        "spec": {"className": "narrowing", "scopes": ["orders:write"]},
    }))
    .unwrap();
    // The policy sees the new class through an informer; until then the key may pass anyway.
    create(&client, &key, true).await.unwrap();

    let narrowed = json!({"spec": {"allowedScopes": [{"resource": "orders", "actions": ["read"]}]}});
    classes.patch("narrowing", &PatchParams::default(), &Patch::Merge(&narrowed)).await.unwrap();
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), ns);
    let edit = json!({"spec": {"displayName": "still writing"}});
    let refusal = eventually("the narrowed class refuses an edit of the key", Duration::from_secs(60), || async {
        keys.patch("writer", &PatchParams { dry_run: true, ..PatchParams::default() }, &Patch::Merge(&edit)).await.err()
    })
    .await;
    assert!(
        refusal.to_string().contains("ApiKeyClass narrowing (allowedScopes): not allowed: orders:write"),
        "{refusal}"
    );
    // Metadata only: not checked, so the team (and the operator's finalizer) can still act on it.
    let label = json!({"metadata": {"labels": {"team": "orders"}}});
    keys.patch("writer", &PatchParams::default(), &Patch::Merge(&label)).await.expect("a label edit is admitted");
    keys.delete("writer", &DeleteParams::default()).await.expect("the broken key can be deleted");
}
