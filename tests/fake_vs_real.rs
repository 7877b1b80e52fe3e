//! The fake-vs-real scenarios (`tests/fake_vs_real/scenarios.rs`) on the in-memory API alone:
//! each asserts what the real API server does, so a change of the fake that breaks that fails
//! here, without a control plane. `tests/real_cluster/fake_vs_real.rs` runs the same scenarios
//! on both and compares their transcripts line by line.

mod fake_vs_real {
    pub mod fake;
    pub mod scenarios;
}

use fake_vs_real::fake::cluster;
use fake_vs_real::scenarios::{self, Transcript, namespace};

/// Run `scenario` in namespace `ns` of a fresh in-memory cluster.
async fn on_fake<F, Fut>(ns: &str, operator: bool, scenario: F) -> Transcript
where
    F: FnOnce(kube::Client, String) -> Fut,
    Fut: Future<Output = Transcript>,
{
    let (client, _stop) = cluster(operator).await;
    namespace(&client, ns).await;
    scenario(client, ns.to_owned()).await
}

#[tokio::test]
async fn finalizers_hold_a_deleted_object() {
    on_fake("fin", false, async |c, ns| scenarios::finalizers_hold_a_deleted_object(c, &ns).await).await;
}

#[tokio::test]
async fn dry_run_never_persists() {
    on_fake("dry", false, async |c, ns| scenarios::dry_run_never_persists(c, &ns).await).await;
}

#[tokio::test]
async fn a_watch_from_nothing_lists_first() {
    on_fake("watch", false, async |c, ns| scenarios::a_watch_from_nothing_lists_first(c, &ns).await).await;
}

#[tokio::test]
async fn generation_follows_the_spec_only() {
    on_fake("gen", false, async |c, ns| scenarios::generation_follows_the_spec_only(c, &ns).await).await;
}

#[tokio::test]
async fn events_are_one_resource_under_two_apis() {
    on_fake("events", false, async |c, ns| scenarios::events_are_one_resource_under_two_apis(c, &ns).await).await;
}

#[tokio::test]
async fn invalid_api_keys_are_refused() {
    on_fake("invalid", false, async |c, ns| scenarios::invalid_api_keys_are_refused(c, &ns).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_carries_a_key_from_create_to_delete() {
    on_fake("operator", true, async |c, ns| scenarios::the_operator_carries_a_key_from_create_to_delete(c, &ns).await)
        .await;
}
