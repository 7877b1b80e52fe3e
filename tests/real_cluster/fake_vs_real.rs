//! The in-memory API held to the real one: every scenario of `tests/fake_vs_real/scenarios.rs`
//! runs on this binary's control plane and on a fresh in-memory cluster, and the two
//! transcripts must be equal line by line. Where they differ, the real one is right.

use kube::Client;

use super::control_plane::client_from;
use super::fake;
use super::scenarios::{self, Transcript, namespace};
use super::support::cluster;

/// Run `scenario` on the real control plane (namespace `fvr-<ns>`, with the shared operator
/// process when asked) and on the in-memory API (with the controller in process), and fail on
/// any difference.
async fn agree<F, Fut>(ns: &str, operator: bool, scenario: F)
where
    F: Fn(Client, String) -> Fut,
    Fut: Future<Output = Transcript>,
{
    let ns = format!("fvr-{ns}");
    let plane = cluster();
    if operator {
        super::lifecycle::operator();
    }
    let real_client = client_from(plane.kubeconfig()).await;
    namespace(&real_client, &ns).await;
    let real = scenario(real_client, ns.clone()).await;
    // Shown when the test fails: what the real server did.
    println!("real transcript ({ns}):\n  {}", real.join("\n  "));

    let (fake_client, _stop) = fake::cluster(operator).await;
    namespace(&fake_client, &ns).await;
    let fake = scenario(fake_client, ns.clone()).await;

    let differences: Vec<String> = (0..real.len().max(fake.len()))
        .filter(|&i| real.get(i) != fake.get(i))
        .map(|i| format!("  real: {:?}\n  fake: {:?}", real.get(i), fake.get(i)))
        .collect();
    assert!(
        differences.is_empty(),
        "the in-memory API and the real one disagree ({ns}):\n{}\nreal transcript:\n  {}",
        differences.join("\n"),
        real.join("\n  ")
    );
}

super::scenarios::scenario_tests!(agree);
