//! ApiKeyClasses on the real API server, in a control plane of their own (a default class
//! holds every key of the cluster that names none, so it shares its cluster with nothing):
//! the ValidatingAdmissionPolicy of `manifests/classes/` judges the shared table
//! (`tests/classes/cases.yaml`) as the operator's rules do (tests/classes.rs), with the
//! message a user sees; a key that broke its class after the class tightened can still be
//! labelled and deleted, not edited; and the operator, as its ServiceAccount, publishes the
//! keys of `examples/classes/` and unpublishes one when its class narrows.

#[path = "real_cluster/control_plane.rs"]
mod control_plane;
#[path = "real_cluster/support.rs"]
mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use keyward::api::{ApiKey, ApiKeyClass};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use control_plane::client_from;
use support::{cluster_with_manifests, describe, eventually, is_ready, records, repo, run_ok, start_operator};

#[path = "classes/table.rs"]
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
        create(client, &table.cases[probe].key(probe, keyward::runtime::clock::now()), false).await.err()
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
        let outcome = create(&client, &case.key(index, keyward::runtime::clock::now()), false).await;
        match (outcome, case.refused.first()) {
            (Ok(()), None) => {}
            (Ok(()), Some(expected)) => disagreements.push(format!("{}: accepted, expected {expected:?}", case.name)),
            (Err(message), None) => {
                disagreements.push(format!("{}: refused ({message}), expected acceptance", case.name));
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

/// `kubectl apply -f -` of `yaml`, as the cluster admin.
fn apply_yaml(plane: &control_plane::ControlPlane, yaml: &str) -> std::process::Output {
    let mut child = plane
        .kubectl()
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), yaml.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn the_example_classes_and_keys_are_published_by_the_operator_and_a_narrowed_class_unpublishes() {
    let plane = cluster_with_manifests();
    let client = client_from(plane.kubeconfig()).await;
    let _operator = start_operator(plane, "classes", &plane.ready.dir);
    run_ok(plane.kubectl().args(["apply", "-k"]).arg(repo("examples/classes")));

    // The client key as shipped has no date: the API server refuses it (schema first).
    let shipped = std::fs::read_to_string(repo("examples/classes/client-key.yaml")).unwrap();
    let refused = apply_yaml(plane, &shipped);
    assert!(!refused.status.success(), "the shipped client key needs a date: {}", describe(&refused));
    // With an expiresAt too far ahead, the class policy names its rule.
    let far = shipped.replace(
        "EXPIRES_AT",
        &(keyward::runtime::clock::now() + jiff::SignedDuration::from_hours(24 * 120)).to_string(),
    );
    let refused =
        eventually("the class policy refuses a client key living too long", Duration::from_secs(60), || async {
            let output = apply_yaml(plane, &far);
            (!output.status.success()).then(|| String::from_utf8_lossy(&output.stderr).into_owned())
        })
        .await;
    assert!(refused.contains("ApiKeyClass client (maxLifetime): expiresAt is required, at most 90d"), "{refused}");
    // As the file's comment says: within 90 days.
    let dated = shipped.replace(
        "EXPIRES_AT",
        &(keyward::runtime::clock::now() + jiff::SignedDuration::from_hours(24 * 60)).to_string(),
    );
    let output = apply_yaml(plane, &dated);
    assert!(output.status.success(), "{}", describe(&output));

    for (namespace, name, class) in [
        ("acme-customers", "customer-dashboard", "client"),
        ("acme-partners", "partner-orders-sync", "partner"),
        ("acme-platform", "platform-automation", "internal"),
    ] {
        let keys: Api<ApiKey> = Api::namespaced(client.clone(), namespace);
        let key = eventually(&format!("{namespace}/{name} Ready"), Duration::from_secs(90), || async {
            keys.get_opt(name).await.unwrap().filter(is_ready)
        })
        .await;
        assert_eq!(key.status.unwrap().class_name.as_deref(), Some(class));
    }
    let client_records = records(&client, "acme-customers", "default").await;
    let limit = client_records[0].rate_limit.as_ref().expect("the class default is published");
    assert_eq!((limit.requests, limit.period.to_string().as_str()), (10, "1s"));

    // Narrow the partner class: the operator (watching classes) unpublishes the key that broke it.
    let classes: Api<ApiKeyClass> = Api::all(client.clone());
    let narrowed = json!({"spec": {"allowedScopes": [{"resource": "*", "actions": ["read"]}]}});
    classes.patch("partner", &PatchParams::default(), &Patch::Merge(&narrowed)).await.unwrap();
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), "acme-partners");
    let held = eventually("the partner key held back by its narrowed class", Duration::from_secs(60), || async {
        let key = keys.get("partner-orders-sync").await.unwrap();
        let ready = key.status.as_ref()?.conditions.first()?.clone();
        (ready.reason == "ClassViolation").then_some(ready)
    })
    .await;
    assert_eq!(held.message, "ApiKeyClass partner (allowedScopes): not allowed: orders:write");
    eventually("the partner key's hash leaves its key set", Duration::from_secs(60), || async {
        records(&client, "acme-partners", "partners").await.is_empty().then_some(())
    })
    .await;
    // The Event is written after the status that says ClassViolation: wait for it too.
    eventually("a ClassViolation Warning Event for the key", Duration::from_secs(60), || async {
        let events = run_ok(plane.kubectl().args(["get", "events", "-n", "acme-partners", "-o", "json"]));
        events.contains("ClassViolation").then_some(())
    })
    .await;
}
