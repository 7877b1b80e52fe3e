//! Organisation-wide keys on a real API server: the ClusterApiKey CRD as shipped (its CEL rules
//! answer a table of allowed and refused objects), the shared operator as its ServiceAccount with
//! the shipped RBAC publishing one key to the two selected namespaces and not to a third (watch
//! verifiers: 200, 200, 401; a gated KeySet answers 402 there too), garbage collection of its
//! Secret through the cluster-scoped owner, and a namespace admin refused a ClusterApiKey.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use keyward::api::ClusterApiKey;
use keyward::token::Token;
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

use super::control_plane::client_from;
use super::lifecycle::{assert_operator_log_clean, create, setup};
use super::support::{eventually, install_crd, records, run_ok, start_watch_verifier, verify};

const MINUTE: Duration = Duration::from_secs(60);

fn key(name: &str, spec: &serde_json::Value) -> ClusterApiKey {
    serde_json::from_value(raw(name, spec)).unwrap()
}

/// A ClusterApiKey as a user may write it, whether or not the types accept it.
fn raw(name: &str, spec: &serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ClusterApiKey", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn admission_refuses_cluster_keys_that_would_publish_everywhere_or_break_a_rule() {
    let (plane, client) = setup("cak-admission").await;
    install_crd(plane, "crds/clusterapikey.yaml", "clusterapikeys.keyward.dev");
    let keys: Api<ClusterApiKey> = Api::all(client.clone());
    let written: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::erase::<ClusterApiKey>(&()));
    let dry = PostParams { dry_run: true, ..PostParams::default() };
    let base = json!({"scopes": ["orders:read"], "secretNamespace": "platform",
        "namespaceSelector": {"matchLabels": {"agency": "acme"}}});
    let with = |extra: serde_json::Value| {
        let mut spec = base.clone();
        json_patch::merge(&mut spec, &extra);
        spec
    };
    let table: Vec<(&str, serde_json::Value, Option<&str>)> = vec![
        ("a selector by label", base.clone(), None),
        (
            "every namespace, said explicitly",
            with(json!({"namespaceSelector": {"matchLabels": null,
                "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "Exists"}]}})),
            None,
        ),
        (
            "an empty selector",
            with(json!({"namespaceSelector": {"matchLabels": null}})),
            Some("namespaceSelector must not be empty"),
        ),
        ("a class", with(json!({"className": "partner"})), Some("className is for namespaced ApiKeys")),
        ("usage expiry (usage is counted)", with(json!({"expireAfterUnused": "30d"})), None),
        ("no secretNamespace", with(json!({"secretNamespace": null})), Some("secretNamespace: Required value")),
        ("a bad scope", with(json!({"scopes": ["orders:delete"]})), Some("spec.scopes[0]")),
        (
            "In without values",
            with(json!({"namespaceSelector": {"matchExpressions": [{"key": "agency", "operator": "In"}]}})),
            Some("In and NotIn need values"),
        ),
    ];
    for (case, spec, refusal) in table {
        let object: DynamicObject = serde_json::from_value(raw("table", &spec)).unwrap();
        let result = written.create(&dry, &object).await;
        match (refusal, result) {
            (None, Ok(_)) => {}
            (None, Err(e)) => panic!("{case}: refused: {e}"),
            (Some(message), Ok(_)) => panic!("{case}: admitted, expected {message:?}"),
            (Some(message), Err(e)) => assert!(e.to_string().contains(message), "{case}: {e}"),
        }
    }

    // Transition rules: the Secret's namespace is fixed, and revocation is permanent.
    keys.create(&PostParams::default(), &key("fixed", &with(json!({"revoked": true})))).await.unwrap();
    for (patch, message) in [
        (json!({"spec": {"secretNamespace": "elsewhere"}}), "secretNamespace cannot be changed"),
        (json!({"spec": {"revoked": false}}), "revoked is permanent"),
    ] {
        let refused = keys.patch("fixed", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap_err();
        assert!(refused.to_string().contains(message), "{refused}");
    }
    keys.delete("fixed", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn the_operator_publishes_a_cluster_key_to_two_selected_namespaces_and_not_a_third() {
    let (plane, client) = setup("cak-platform").await;
    install_crd(plane, "crds/clusterapikey.yaml", "clusterapikeys.keyward.dev");
    for (ns, label) in [("cak-a", "agency=acme"), ("cak-b", "agency=acme"), ("cak-c", "agency=other")] {
        run_ok(plane.kubectl().args(["create", "namespace", ns]));
        run_ok(plane.kubectl().args(["label", "namespace", ns, label]));
    }
    // cak-c has a key of its own, so its key set exists (a verifier without one is not ready).
    create(
        plane,
        "cak-c",
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: local}\nspec: {scopes: [orders:read]}\n",
    );
    let keys: Api<ClusterApiKey> = Api::all(client.clone());
    let spec = json!({"displayName": "Agency", "scopes": ["orders:read"], "secretNamespace": "cak-platform",
        "namespaceSelector": {"matchLabels": {"agency": "acme"}}});
    keys.create(&PostParams::default(), &key("acme-agency", &spec)).await.unwrap();

    let ready = eventually("the ClusterApiKey Ready", MINUTE, || async {
        keys.get("acme-agency").await.unwrap().status.filter(|s| {
            s.key.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True") && s.namespaces.len() == 2
        })
    })
    .await;
    assert_eq!(ready.namespaces, ["cak-a", "cak-b"]);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "cak-platform");
    let secret = secrets.get("acme-agency-apikey").await.unwrap();
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("ClusterApiKey", "acme-agency"));
    let raw = secret.data.unwrap().remove("token").unwrap().0;
    let token = Token::parse(std::str::from_utf8(&raw).unwrap()).unwrap();
    let hash = token.hash();
    for ns in ["cak-a", "cak-b"] {
        let mine: Vec<_> = records(&client, ns, "default").await.into_iter().filter(|r| r.hash == hash).collect();
        assert_eq!(mine.len(), 1, "{ns}");
        assert_eq!(format!("{}/{}", mine[0].namespace, mine[0].name), "cluster/acme-agency", "{ns}");
    }
    assert!(records(&client, "cak-c", "default").await.iter().all(|r| r.hash != hash), "cak-c is not selected");

    // Verifiers of each namespace's key set: allowed in A and B, unknown in C; a gated B answers 402.
    let (_va, a) = start_watch_verifier(plane, "cak-a");
    let (_vb, b) = start_watch_verifier(plane, "cak-b");
    let (_vc, c) = start_watch_verifier(plane, "cak-c");
    for (addr, code, ns) in [(a, 200, "cak-a"), (b, 200, "cak-b"), (c, 401, "cak-c")] {
        eventually(&format!("{ns}'s verifier to answer {code}"), MINUTE, || async {
            (verify(addr, &token).await == Some(code)).then_some(())
        })
        .await;
    }
    create(
        plane,
        "cak-b",
        "apiVersion: keyward.dev/v1alpha1\nkind: KeySet\nmetadata: {name: default}\nspec: {access: PaymentRequired}\n",
    );
    eventually("402 in the gated cak-b", MINUTE, || async { (verify(b, &token).await == Some(402)).then_some(()) })
        .await;
    assert_eq!(verify(a, &token).await, Some(200), "cak-a is not gated");

    // cak-a leaves the agency: its verifier refuses the key; cak-b (gated) still lists it.
    run_ok(plane.kubectl().args(["label", "namespace", "cak-a", "agency-"]));
    eventually("401 in cak-a once it left", MINUTE, || async { (verify(a, &token).await == Some(401)).then_some(()) })
        .await;

    // Deleting the key unpublishes it everywhere; the garbage collector takes its Secret.
    keys.delete("acme-agency", &DeleteParams::default()).await.unwrap();
    eventually("the key gone from cak-b", MINUTE, || async {
        records(&client, "cak-b", "default").await.iter().all(|r| r.hash != hash).then_some(())
    })
    .await;
    eventually("the Secret garbage-collected", MINUTE, || async {
        secrets.get_opt("acme-agency-apikey").await.unwrap().is_none().then_some(())
    })
    .await;
    assert_operator_log_clean(&[&token]);
}

#[tokio::test]
async fn a_namespace_admin_cannot_create_a_cluster_key() {
    let (plane, _client) = setup("cak-tenant").await;
    install_crd(plane, "crds/clusterapikey.yaml", "clusterapikeys.keyward.dev");
    run_ok(plane.kubectl().args(["create", "serviceaccount", "team", "-n", "cak-tenant"]));
    run_ok(plane.kubectl().args([
        "create",
        "rolebinding",
        "team-admin",
        "--clusterrole=admin",
        "--serviceaccount=cak-tenant:team",
        "-n",
        "cak-tenant",
    ]));
    let team = client_from(&plane.service_account_kubeconfig("cak-tenant", "team")).await;
    let spec = json!({"scopes": ["orders:read"], "secretNamespace": "cak-tenant",
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "cak-tenant"}}});
    let refused =
        Api::<ClusterApiKey>::all(team).create(&PostParams::default(), &key("tenant-key", &spec)).await.unwrap_err();
    assert!(matches!(&refused, kube::Error::Api(s) if s.code == 403), "{refused}");
    assert!(refused.to_string().contains("clusterapikeys"), "the refusal names the resource: {refused}");
}
