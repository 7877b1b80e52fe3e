//! Two `keyward operator` replicas on a real API server, in a control plane of their
//! own (this test kills replicas, so it shares its cluster with nothing): one leads on
//! the Lease, `kill -9` of the leader hands over to the other, and no key is minted
//! twice nor a token lost.

#[path = "real_cluster/control_plane.rs"]
mod control_plane;
#[path = "real_cluster/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use keyward::api::ApiKey;
use keyward::token::Token;
use kube::Api;

use support::{apply, cluster_with_manifests, describe, eventually, is_ready, records, start_operator};

const NS: &str = "ha";

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases.get_opt("keyward-operator").await.ok()??.spec?.holder_identity
}

async fn tokens(client: &kube::Client) -> BTreeMap<String, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let mut out = BTreeMap::new();
    for secret in
        secrets.list(&kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=keyward")).await.unwrap()
    {
        if let Some(raw) = secret.data.and_then(|mut d| d.remove("token")) {
            let token = Token::parse(std::str::from_utf8(&raw.0).unwrap()).unwrap();
            out.insert(secret.metadata.name.unwrap(), token.hash().to_string());
        }
    }
    out
}

fn create_keys(plane: &control_plane::ControlPlane, names: impl Iterator<Item = String>) {
    let docs: Vec<String> = names
        .map(|n| format!("apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: {n}}}\nspec: {{scopes: [orders:read]}}\n"))
        .collect();
    let yaml = docs.join("---\n");
    let output = apply(plane, NS, &yaml);
    assert!(output.status.success(), "{}", describe(&output));
}

async fn all_ready(client: &kube::Client, count: usize) {
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), NS);
    eventually(&format!("{count} keys Ready"), Duration::from_secs(120), || async {
        let list = keys.list(&kube::api::ListParams::default()).await.unwrap();
        (list.items.len() == count && list.items.iter().all(is_ready)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_standby_takes_over_after_the_leader_is_killed_without_minting_twice_or_losing_a_token() {
    let plane = cluster_with_manifests();
    support::run_ok(plane.kubectl().args(["create", "namespace", NS]));
    let client = control_plane::client_from(plane.kubeconfig()).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "keyward-system");

    let first = start_operator(plane, "replica-a", &plane.ready.dir);
    eventually("replica-a to lead", Duration::from_secs(60), || async {
        (holder(&leases).await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let second = start_operator(plane, "replica-b", &plane.ready.dir);

    create_keys(plane, (0..20).map(|i| format!("key-{i:02}")));
    all_ready(&client, 20).await;
    let before = tokens(&client).await;
    assert_eq!(before.len(), 20);
    assert_eq!(holder(&leases).await.as_deref(), Some("replica-a"), "the standby never took the Lease");

    first.kill_hard();
    let killed = Instant::now();
    eventually("replica-b to take over", Duration::from_secs(60), || async {
        (holder(&leases).await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    println!("replica-b took the Lease {:?} after replica-a was killed (lease duration 6 s)", killed.elapsed());

    create_keys(plane, (20..25).map(|i| format!("key-{i:02}")));
    all_ready(&client, 25).await;
    let after = tokens(&client).await;
    for (secret, hash) in &before {
        assert_eq!(after.get(secret), Some(hash), "{secret}: the token survived the failover unchanged");
    }
    let mut published: Vec<String> = records(&client, NS, "default").await.iter().map(|r| r.hash.to_string()).collect();
    published.sort();
    let mut expected: Vec<String> = after.values().cloned().collect();
    expected.sort();
    assert_eq!(published, expected, "exactly the Secrets' tokens are published, one per key");

    for replica in [&first, &second] {
        let log = replica.log_text();
        assert!(!log.to_lowercase().contains("forbidden"), "{} was refused by RBAC:\n{log}", replica.log.display());
    }
    assert!(second.is_running(), "the new leader keeps running");
}
