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

fake_vs_real::scenarios::scenario_tests!(on_fake);
