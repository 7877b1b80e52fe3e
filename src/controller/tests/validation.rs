//! Invalid specs through the API: reported, and waiting for a change.

use crate::api::KeyState;
use crate::plan::Settings;

use super::harness::harness;

#[tokio::test]
async fn an_invalid_spec_is_reported_and_waits_for_a_change() {
    let h = harness(Settings::default()).await;
    h.create(
        "
apiVersion: keyward.dev/v1alpha1
kind: ApiKey
metadata: {name: crm, namespace: team-a}
spec:
  scopes: [\"orders:fly\"]
",
    )
    .await;

    let action = h.settle("crm").await;

    assert_eq!(action, kube::runtime::controller::Action::await_change());
    let status = h.get("crm").await.status.unwrap();
    assert_eq!(status.state, Some(KeyState::Error));
    assert_eq!(status.conditions[0].reason, "InvalidSpec");
    assert!(status.conditions[0].message.contains("spec.scopes[0]"));
    assert!(h.secret("crm-apikey").await.is_none());
    assert!(h.event_reasons().await.contains(&"InvalidSpec".to_owned()));
}
