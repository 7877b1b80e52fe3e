//! The real `keyward operator` process, authenticated as the ServiceAccount of
//! `manifests/` with exactly its RBAC, carrying keys through their whole life on a real
//! API server. Each test has its own namespace; one operator serves them all. A 403
//! anywhere fails the test: least privilege proven, not asserted.

use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use keyward::api::ApiKey;
use keyward::token::Token;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::control_plane::{ControlPlane, client_from};
use super::support::{
    Tethered, apply, cluster_with_manifests, describe, eventually, is_ready, records, run_ok, start_operator,
    start_watch_verifier, verify,
};

const MINUTE: Duration = Duration::from_secs(60);

/// The one operator of this test binary, shared by every module that needs one (lifecycle,
/// plugin, restarts, and the fake-vs-real scenarios).
pub fn operator() -> &'static Tethered {
    static OPERATOR: OnceLock<Tethered> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        let plane = cluster_with_manifests();
        start_operator(plane, "lifecycle", &plane.ready.dir)
    })
}

/// A fresh namespace, the shared operator running, and an admin client.
pub(super) async fn setup(namespace: &str) -> (&'static ControlPlane, Client) {
    let plane = cluster_with_manifests();
    operator();
    run_ok(plane.kubectl().args(["create", "namespace", namespace]));
    (plane, client_from(plane.kubeconfig()).await)
}

pub(super) fn create(plane: &ControlPlane, namespace: &str, yaml: &str) {
    let output = apply(plane, namespace, yaml);
    assert!(output.status.success(), "apply failed: {}", describe(&output));
}

pub(super) async fn ready(client: &Client, namespace: &str, name: &str) -> ApiKey {
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), namespace);
    eventually(&format!("{namespace}/{name} Ready"), MINUTE, || async {
        keys.get_opt(name).await.unwrap().filter(is_ready)
    })
    .await
}

fn state(key: &ApiKey) -> String {
    key.status
        .as_ref()
        .and_then(|s| s.state.as_ref())
        .map(|s| json!(s).as_str().unwrap().to_owned())
        .unwrap_or_default()
}

pub(super) async fn with_state(client: &Client, namespace: &str, name: &str, wanted: &str) -> ApiKey {
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), namespace);
    eventually(&format!("{namespace}/{name} in state {wanted}"), MINUTE, || async {
        keys.get_opt(name).await.unwrap().filter(|k| state(k) == wanted && is_settled(k))
    })
    .await
}

fn is_settled(key: &ApiKey) -> bool {
    key.status.as_ref().is_some_and(|s| s.observed_generation == key.metadata.generation)
}

/// Creates ApiKey `partner` (scope `orders:read`) in `namespace`, waits until it is Ready, and
/// returns the token from its Secret.
pub(super) async fn ready_partner(plane: &ControlPlane, client: &Client, namespace: &str) -> Token {
    create(
        plane,
        namespace,
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: partner}\nspec: {scopes: [orders:read]}\n",
    );
    ready(client, namespace, "partner").await;
    secret_token(client, namespace, "partner-apikey").await.expect("partner's Secret holds its token")
}

/// The token in a key's Secret, if there is one.
pub(super) async fn secret_token(client: &Client, namespace: &str, secret: &str) -> Option<Token> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let raw = secrets.get_opt(secret).await.unwrap()?.data?.remove("token")?.0;
    Token::parse(std::str::from_utf8(&raw).ok()?).ok()
}

async fn published(client: &Client, namespace: &str) -> Vec<String> {
    records(client, namespace, "default").await.iter().map(|r| r.hash.to_string()).collect()
}

/// Nothing the operator did was refused for lack of RBAC, and it logged none of `tokens`.
pub(super) fn assert_operator_log_clean(tokens: &[&Token]) {
    let log = operator().log_text();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the operator was refused something by RBAC:\n{}",
        log.lines().filter(|l| l.to_lowercase().contains("forbidden")).take(5).collect::<Vec<_>>().join("\n")
    );
    for token in tokens {
        assert!(!log.contains(token.expose()), "a token appears in the operator's log");
    }
    assert!(operator().is_running(), "the operator is still running:\n{log}");
}

#[tokio::test]
async fn a_new_key_becomes_ready_with_its_token_in_an_owned_secret_and_only_its_hash_published() {
    let ns = "life-create";
    let (plane, client) = setup(ns).await;
    create(
        plane,
        ns,
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: crm}\nspec: {scopes: [orders:read]}\n",
    );
    run_ok(plane.kubectl().args(["wait", "-n", ns, "--for=condition=Ready", "apikey/crm", "--timeout=60s"]));

    let key = ready(&client, ns, "crm").await;
    let token = secret_token(&client, ns, "crm-apikey").await.expect("the Secret holds a well-formed token");
    let status = key.status.as_ref().unwrap();
    assert_eq!(status.current_key.as_ref().unwrap().key_id, token.hash().key_id().as_str());
    assert_eq!(published(&client, ns).await, vec![token.hash().to_string()]);
    assert_eq!(state(&key), "Active");
    assert!(
        key.metadata.finalizers.as_ref().is_some_and(|f| !f.is_empty()),
        "the operator holds a finalizer on the live key"
    );

    let secret = Api::<Secret>::namespaced(client.clone(), ns).get("crm-apikey").await.unwrap();
    let owner = &secret.metadata.owner_references.as_ref().expect("the Secret has an owner")[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("ApiKey", "crm"));
    assert_eq!(owner.uid, key.metadata.uid.clone().unwrap());

    // Re-applying the same YAML never mints a new token.
    create(
        plane,
        ns,
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: crm}\nspec: {scopes: [orders:read]}\n",
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(secret_token(&client, ns, "crm-apikey").await.unwrap().hash(), token.hash());
    assert_operator_log_clean(&[&token]);
}

#[tokio::test]
async fn rotation_by_annotation_keeps_both_tokens_published_during_the_grace_period() {
    let ns = "life-rotate";
    let (plane, client) = setup(ns).await;
    create(
        plane,
        ns,
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: crm}\nspec: {scopes: [orders:read], rotation: {every: 90d, gracePeriod: 1h}}\n",
    );
    let before = ready(&client, ns, "crm").await;
    let old = secret_token(&client, ns, "crm-apikey").await.unwrap();

    run_ok(plane.kubectl().args(["annotate", "-n", ns, "apikey/crm", "keyward.dev/rotate=first", "--overwrite"]));
    let new = eventually("the Secret to hold a new token", MINUTE, || async {
        secret_token(&client, ns, "crm-apikey").await.filter(|t| t.hash() != old.hash())
    })
    .await;
    let after = eventually("status to name the new and previous keys", MINUTE, || async {
        let key = Api::<ApiKey>::namespaced(client.clone(), ns).get("crm").await.unwrap();
        let s = key.status.clone()?;
        (s.current_key?.key_id == new.hash().key_id().as_str()
            && s.previous_key?.key_id == old.hash().key_id().as_str())
        .then_some(key)
    })
    .await;
    let mut both = vec![old.hash().to_string(), new.hash().to_string()];
    both.sort();
    let mut hashes = published(&client, ns).await;
    hashes.sort();
    assert_eq!(hashes, both, "during grace both tokens are published");
    assert_ne!(before.metadata.resource_version, after.metadata.resource_version);

    // The same annotation value applied again does nothing.
    run_ok(plane.kubectl().args(["annotate", "-n", ns, "apikey/crm", "keyward.dev/rotate=first", "--overwrite"]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(secret_token(&client, ns, "crm-apikey").await.unwrap().hash(), new.hash());
    assert_operator_log_clean(&[&old, &new]);
}

#[tokio::test]
async fn a_scheduled_rotation_replaces_the_token_and_retires_the_old_one_after_grace() {
    let ns = "life-schedule";
    let (plane, client) = setup(ns).await;
    create(
        plane,
        ns,
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: cron}\nspec: {scopes: [orders:read], rotation: {every: 15s, gracePeriod: 3s}}\n",
    );
    ready(&client, ns, "cron").await;
    let first = secret_token(&client, ns, "cron-apikey").await.unwrap();
    let second = eventually("a scheduled rotation", 2 * MINUTE, || async {
        secret_token(&client, ns, "cron-apikey").await.filter(|t| t.hash() != first.hash())
    })
    .await;
    eventually("the first token retired after its grace period", MINUTE, || async {
        let hashes = published(&client, ns).await;
        (!hashes.contains(&first.hash().to_string()) && hashes.contains(&second.hash().to_string())).then_some(())
    })
    .await;
    assert_operator_log_clean(&[&first, &second]);
}

#[tokio::test]
async fn disable_and_enable_mark_the_published_record_and_keep_the_token() {
    let ns = "life-disable";
    let (plane, client) = setup(ns).await;
    create(
        plane,
        ns,
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: crm}\nspec: {scopes: [orders:read]}\n",
    );
    ready(&client, ns, "crm").await;
    let token = secret_token(&client, ns, "crm-apikey").await.unwrap();

    create(
        plane,
        ns,
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: crm}\nspec: {scopes: [orders:read], active: false}\n",
    );
    with_state(&client, ns, "crm", "Inactive").await;
    eventually("the record marked inactive or removed", MINUTE, || async {
        let records = records(&client, ns, "default").await;
        records
            .iter()
            .all(|r| r.hash != token.hash() || r.state == keyward::keyset::RecordState::Inactive)
            .then_some(())
    })
    .await;

    create(
        plane,
        ns,
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: crm}\nspec: {scopes: [orders:read], active: true}\n",
    );
    with_state(&client, ns, "crm", "Active").await;
    eventually("the record active again", MINUTE, || async {
        let records = records(&client, ns, "default").await;
        records.iter().any(|r| r.hash == token.hash() && r.state == keyward::keyset::RecordState::Active).then_some(())
    })
    .await;
    assert_eq!(
        secret_token(&client, ns, "crm-apikey").await.unwrap().hash(),
        token.hash(),
        "the same token throughout"
    );
    assert_operator_log_clean(&[&token]);
}

#[tokio::test]
async fn revocation_removes_hash_and_token_and_the_api_server_refuses_to_undo_it() {
    let ns = "life-revoke";
    let (plane, client) = setup(ns).await;
    let yaml = |revoked: bool| {
        format!(
            "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: crm}}\nspec: {{scopes: [orders:read], revoked: {revoked}}}\n"
        )
    };
    create(plane, ns, &yaml(false));
    ready(&client, ns, "crm").await;
    let token = secret_token(&client, ns, "crm-apikey").await.unwrap();

    create(plane, ns, &yaml(true));
    with_state(&client, ns, "crm", "Revoked").await;
    eventually("the hash gone and the token removed from the Secret", MINUTE, || async {
        let gone = !published(&client, ns).await.contains(&token.hash().to_string());
        (gone && secret_token(&client, ns, "crm-apikey").await.is_none()).then_some(())
    })
    .await;

    // Un-revoking is refused by the CRD's transition rule: by apply, by merge patch, and by
    // an apply that simply drops the field (defaulted to false, then refused).
    let refused = apply(plane, ns, &yaml(false));
    assert!(!refused.status.success(), "un-revoke by apply must be refused");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("revoked"), "{}", describe(&refused));
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), ns);
    let patch = keys.patch("crm", &PatchParams::default(), &Patch::Merge(json!({"spec": {"revoked": false}}))).await;
    assert!(matches!(patch, Err(kube::Error::Api(ref e)) if e.code == 422), "merge patch un-revoke: {patch:?}");
    let dropped = apply(
        plane,
        ns,
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: crm}\nspec: {scopes: [orders:read]}\n",
    );
    assert!(
        !dropped.status.success(),
        "dropping revoked from the applied manifest must be refused: {}",
        describe(&dropped)
    );
    assert_eq!(state(&keys.get("crm").await.unwrap()), "Revoked", "the ApiKey stays as the audit record");
    assert_operator_log_clean(&[&token]);
}

#[tokio::test]
async fn an_expired_key_loses_its_token_and_is_deleted_after_its_retention() {
    let ns = "life-expire";
    let (plane, client) = setup(ns).await;
    // Retention counts from expiresAt: long enough that the Expired state is seen before the
    // deletion even when the operator is slow to act on the expiry.
    let yaml = |expires_at: &str| {
        format!(
            "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: short}}\nspec: {{scopes: [orders:read], {expires_at}retainExpiredFor: 30s}}\n"
        )
    };
    create(plane, ns, &yaml(""));
    ready(&client, ns, "short").await;
    let token = secret_token(&client, ns, "short-apikey").await.unwrap();
    // The expiry is declared once the key is Ready: one declared at creation could pass before
    // a loaded machine makes the key Ready, which then never happens.
    let expires = keyward::runtime::clock::now() + jiff::SignedDuration::from_secs(2);
    let expires = expires.round(jiff::Unit::Second).unwrap();
    create(plane, ns, &yaml(&format!("expiresAt: '{expires}', ")));
    with_state(&client, ns, "short", "Expired").await;
    assert!(!published(&client, ns).await.contains(&token.hash().to_string()), "an expired key's hash is withdrawn");
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), ns);
    eventually("the expired ApiKey deleted after retainExpiredFor", MINUTE, || async {
        keys.get_opt("short").await.unwrap().is_none().then_some(())
    })
    .await;
    assert_operator_log_clean(&[&token]);
}

#[tokio::test]
async fn deletion_withdraws_the_hash_and_the_garbage_collector_removes_the_secret() {
    let ns = "life-delete";
    let (plane, client) = setup(ns).await;
    create(
        plane,
        ns,
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: gone}\nspec: {scopes: [orders:read]}\n",
    );
    ready(&client, ns, "gone").await;
    let token = secret_token(&client, ns, "gone-apikey").await.unwrap();

    let keys: Api<ApiKey> = Api::namespaced(client.clone(), ns);
    keys.delete("gone", &DeleteParams::default()).await.unwrap();
    eventually("the ApiKey gone once its finalizer is released", MINUTE, || async {
        keys.get_opt("gone").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(!published(&client, ns).await.contains(&token.hash().to_string()), "the hash left before the object did");
    // kube-controller-manager's garbage collector follows the ownerReference.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    eventually("the garbage collector to delete the Secret", 2 * MINUTE, || async {
        secrets.get_opt("gone-apikey").await.unwrap().is_none().then_some(())
    })
    .await;
    assert_operator_log_clean(&[&token]);
}

#[tokio::test]
async fn a_deleted_or_edited_secret_and_a_hand_edited_key_set_are_repaired() {
    let ns = "life-tamper";
    let (plane, client) = setup(ns).await;
    create(
        plane,
        ns,
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: crm}\nspec: {scopes: [orders:read]}\n",
    );
    ready(&client, ns, "crm").await;
    let first = secret_token(&client, ns, "crm-apikey").await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);

    let consistent = || async {
        let token = secret_token(&client, ns, "crm-apikey").await?;
        let key = Api::<ApiKey>::namespaced(client.clone(), ns).get("crm").await.ok()?;
        let current = key.status.as_ref()?.current_key.as_ref()?.key_id.clone();
        (is_ready(&key)
            && current == token.hash().key_id().as_str()
            && published(&client, ns).await.contains(&token.hash().to_string()))
        .then_some(token)
    };

    secrets.delete("crm-apikey", &DeleteParams::default()).await.unwrap();
    let second = eventually("a deleted Secret repaired", MINUTE, consistent).await;

    secrets
        .patch("crm-apikey", &PatchParams::default(), &Patch::Merge(json!({"stringData": {"token": "not-a-token"}})))
        .await
        .unwrap();
    let third = eventually("an edited Secret repaired", MINUTE, consistent).await;

    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let shard = maps.list(&kube::api::ListParams::default().labels("keyward.dev/keyset=default")).await.unwrap();
    let name = shard.items[0].metadata.name.clone().unwrap();
    maps.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"data": null, "binaryData": null}))).await.unwrap();
    eventually("a hand-edited key set repaired", MINUTE, || async {
        published(&client, ns).await.contains(&third.hash().to_string()).then_some(())
    })
    .await;
    assert_operator_log_clean(&[&first, &second, &third]);
}

#[tokio::test]
async fn server_side_apply_removes_a_secret_label_the_operator_stops_sending() {
    let ns = "life-ssa";
    let (plane, client) = setup(ns).await;
    create(
        plane,
        ns,
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: crm}\nspec: {scopes: [orders:read], secretTemplate: {labels: {team: a, tier: gold}}}\n",
    );
    ready(&client, ns, "crm").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let labels = secrets.get("crm-apikey").await.unwrap().metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("tier").map(String::as_str), Some("gold"), "{labels:?}");

    create(
        plane,
        ns,
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: crm}\nspec: {scopes: [orders:read], secretTemplate: {labels: {team: a}}}\n",
    );
    eventually("the tier label removed from the Secret", MINUTE, || async {
        let labels = secrets.get("crm-apikey").await.unwrap().metadata.labels.unwrap_or_default();
        (!labels.contains_key("tier") && labels.get("team").map(String::as_str) == Some("a")).then_some(())
    })
    .await;
    assert_operator_log_clean(&[]);
}

#[tokio::test]
async fn a_watch_keyset_verifier_with_the_example_rbac_sees_a_revocation() {
    let ns = "life-verifier";
    let (plane, client) = setup(ns).await;
    let token = ready_partner(plane, &client, ns).await;

    // The verifier as the ServiceAccount and Role examples/ ship.
    let (verifier, addr) = start_watch_verifier(plane, ns);
    eventually("the verifier to allow the key", MINUTE, || async {
        (verify(addr, &token).await == Some(200)).then_some(())
    })
    .await;

    let keys: Api<ApiKey> = Api::namespaced(client.clone(), ns);
    let revoked_at = std::time::Instant::now();
    keys.patch("partner", &PatchParams::default(), &Patch::Merge(json!({"spec": {"revoked": true}}))).await.unwrap();
    eventually("the verifier to refuse the revoked key", MINUTE, || async {
        (verify(addr, &token).await == Some(401)).then_some(())
    })
    .await;
    // A figure for the reader, not an assertion: benches hold the timing claims.
    println!("revocation reached the --watch-keyset verifier in {:?} (polled every 200 ms)", revoked_at.elapsed());
    let log = verifier.log_text();
    assert!(!log.to_lowercase().contains("forbidden"), "the verifier's RBAC suffices:\n{log}");
    assert!(!log.contains(token.expose()), "no token in the verifier's log");
    assert_operator_log_clean(&[&token]);
}
