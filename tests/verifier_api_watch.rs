//! `--watch-keyset`: the verifier follows the key set's ConfigMaps through a watch on the in-memory API
//! (kube-fake-client behind keyward's watch layer), with the same fail-closed rule as for directories.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use keyward::keyset::{KeySetId, Record};
use keyward::token::Token;
use keyward::verifier::loader::KeyStore;
use keyward::verifier::metrics::Metrics;
use kube::api::{Api, DeleteParams, PostParams};

/// Shard ConfigMaps as the operator writes them: `keyset-<name>-<i>`, key `<name>.<i>.keyset`, with the labels.
fn configmaps(set: &str, generation: u64, records: &[Record]) -> Vec<ConfigMap> {
    shard_files(set, generation, records, keyward::keyset::DEFAULT_MAX_SHARD_BYTES)
        .into_iter()
        .enumerate()
        .map(|(i, (file, text))| {
            let mut cm = ConfigMap::default();
            cm.metadata.name = Some(format!("keyset-{set}-{}", i + 1));
            cm.metadata.labels = Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".to_owned(), "keyward".to_owned()),
                ("keyward.dev/keyset".to_owned(), set.to_owned()),
            ]));
            cm.data = Some(BTreeMap::from([(file, text)]));
            cm
        })
        .collect()
}

async fn put(api: &Api<ConfigMap>, cm: &ConfigMap) {
    let name = cm.metadata.name.clone().unwrap();
    match api.get_opt(&name).await.unwrap() {
        None => {
            api.create(&PostParams::default(), cm).await.unwrap();
        }
        Some(existing) => {
            let mut cm = cm.clone();
            cm.metadata.resource_version = existing.metadata.resource_version;
            api.replace(&name, &PostParams::default(), &cm).await.unwrap();
        }
    }
}

fn knows(store: &KeyStore, t: &Token) -> bool {
    store.current().is_some_and(|index| index.get(&t.hash()).is_some())
}

async fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within a minute");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_source_follows_the_shard_configmaps_and_keeps_the_last_good_set() {
    let (stay, revoke, other) = (token(1), token(2), token(3));
    let client = keyward_testkit::fakeapi::client().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "team-a");
    for cm in configmaps("default", 1, &[record(&stay, &["x:read"]), record(&revoke, &["x:read"])]) {
        put(&api, &cm).await;
    }
    // Another key set's ConfigMap in the same namespace: not selected, so never mixed in.
    for cm in configmaps("other", 1, &[record(&other, &["x:read"])]) {
        put(&api, &cm).await;
    }

    let store = Arc::new(KeyStore::default());
    let metrics = Arc::new(Metrics::new());
    let id = KeySetId { namespace: "team-a".into(), name: "default".into() };
    let task = tokio::spawn(keyward::verifier::api_source::watch(
        client.clone(),
        id,
        Arc::clone(&store),
        Arc::clone(&metrics),
    ));
    wait_for("first load", || knows(&store, &stay) && knows(&store, &revoke)).await;
    assert!(!knows(&store, &other), "a ConfigMap of another key set was read");

    // Revocation: the publisher writes generation 2 without the key.
    put(&api, &configmaps("default", 2, &[record(&stay, &["x:read"])])[0]).await;
    wait_for("revocation", || knows(&store, &stay) && !knows(&store, &revoke)).await;

    // A corrupt shard and then a deleted one: refused, the last good set stays.
    let mut corrupt = configmaps("default", 3, &[record(&stay, &["x:read"]), record(&revoke, &["x:read"])])[0].clone();
    corrupt.data.as_mut().unwrap().values_mut().for_each(|text| text.push_str("not a record\n"));
    put(&api, &corrupt).await;
    wait_for("failure counted", || metrics.encode().contains("keyward_verifier_reload_failures_total 1")).await;
    api.delete("keyset-default-1", &DeleteParams::default()).await.unwrap();
    wait_for("failure counted", || metrics.encode().contains("keyward_verifier_reload_failures_total 2")).await;
    assert!(knows(&store, &stay) && !knows(&store, &revoke), "the last good set (generation 2) stays in force");
    assert!(metrics.encode().contains(r#"keyward_verifier_keyset_generation{keyset="team-a/default"} 2"#));
    task.abort();
}
