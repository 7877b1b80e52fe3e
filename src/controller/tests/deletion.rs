//! Deleting an ApiKey: its hashes leave the key set before the finalizer goes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use keyward_testkit::fakeapi::FakeCluster;
use kube::Api;

use crate::api::ApiKey;
use crate::controller::{Context, Publisher, reconcile};
use crate::keyset::decode_shard;
use crate::plan::Settings;

use super::examples::CRM;
use super::harness::{NS, T0, harness};

#[tokio::test]
async fn deleting_an_apikey_unpublishes_it_before_the_finalizer_goes() {
    let h = harness(Settings::default()).await;
    h.create(CRM).await;
    h.settle("crm").await;
    assert_eq!(h.published("default").await.len(), 1);

    // kube-fake-client deletes at once, ignoring finalizers; what the API server
    // would do (set deletionTimestamp, keep the object) is modelled by a restart
    // from the stored objects with the timestamp set.
    let mut key = h.get("crm").await;
    key.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(T0.parse().unwrap()));
    let secret = h.secret("crm-apikey").await.unwrap();
    let shard = Api::<ConfigMap>::namespaced(h.client.clone(), NS).get("keyset-default-1").await.unwrap();
    let client = FakeCluster::new()
        .with_object(key.clone())
        .with_object(secret)
        .with_object(shard)
        .plain_client()
        .await
        .unwrap();
    let clock: crate::controller::Clock = Arc::new(|| T0.parse().unwrap());
    let publisher = Arc::new(Publisher::new(client.clone(), clock.clone(), Duration::from_millis(10)));
    let ctx =
        Arc::new(Context::with(client.clone(), Settings::default(), publisher, clock, crate::controller::os_minter()));

    reconcile(Arc::new(key), ctx).await.unwrap();

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let text = cms.get("keyset-default-1").await.unwrap().data.unwrap().remove("default.1.keyset").unwrap();
    assert!(decode_shard(text.as_bytes()).unwrap().records.is_empty(), "hash removed from the key set");
    assert!(Api::<ApiKey>::namespaced(client, NS).get_opt("crm").await.unwrap().is_none(), "finalizer released");
}
