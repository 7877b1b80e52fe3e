//! Key-set generations keep rising across operator restarts, even when nothing stored remembers the last one.

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::DeleteParams;

use super::examples::CRM;
use super::harness::{NS, harness};
use super::keyset::generation_of;
use crate::keyset::KeySetId;
use crate::plan::Settings;

#[tokio::test]
async fn the_key_set_generation_keeps_rising_after_its_shards_are_deleted_and_the_operator_restarts() {
    let mut h = harness(Settings::default()).await;
    h.create(CRM).await;
    h.settle_ready("crm").await;
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let shard = || async { cms.get("keyset-default-1").await.unwrap().data.unwrap()["default.1.keyset"].clone() };
    let before = generation_of(&shard().await);

    // Verifiers still hold `before`; the operator restarts with no shard left to read it from.
    cms.delete("keyset-default-1", &DeleteParams::default()).await.unwrap();
    h.restart();
    h.advance(SignedDuration::from_secs(1));
    h.ctx.publisher.publish_now(&KeySetId { namespace: NS.to_owned(), name: "default".to_owned() }).await.unwrap();

    let after = generation_of(&shard().await);
    assert!(after > before, "generation went from {before} to {after}: verifiers would refuse the set");
}
