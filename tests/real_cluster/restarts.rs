//! Rotated tokens reach workloads: on the real API server, a Deployment that names a key
//! in `keyward.dev/restart-on-rotation` gets exactly one rolling restart (one new
//! generation) per rotation, after the swap; a Deployment that did not opt in is untouched.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;

use super::lifecycle::{create, ready, secret_token, setup};
use super::support::{eventually, run_ok};

const MINUTE: Duration = Duration::from_secs(60);

fn deployment(name: &str, opt_in: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n{opt_in}spec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  \
         template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: app, image: registry.example/app:1}}]}}\n"
    )
}

fn restarted_at(d: &Deployment) -> Option<String> {
    d.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?.get("keyward.dev/restarted-at").cloned()
}

#[tokio::test]
async fn a_rotation_restarts_the_deployment_that_opted_in_exactly_once_and_no_other() {
    let ns = "restarts";
    let (plane, client) = setup(ns).await;
    create(plane, ns, &deployment("uses-crm", "  annotations: {keyward.dev/restart-on-rotation: crm}\n"));
    create(plane, ns, &deployment("bystander", ""));
    create(
        plane,
        ns,
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: crm}\nspec: {scopes: [orders:read], rotation: {every: 90d, gracePeriod: 1h}}\n",
    );
    ready(&client, ns, "crm").await;
    let old = secret_token(&client, ns, "crm-apikey").await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let generation = |d: &Deployment| d.metadata.generation.unwrap_or_default();
    let (uses, bystander) = (deployments.get("uses-crm").await.unwrap(), deployments.get("bystander").await.unwrap());
    assert_eq!(restarted_at(&uses), None, "creating a key restarts nothing");

    run_ok(plane.kubectl().args(["annotate", "-n", ns, "apikey/crm", "keyward.dev/rotate=now", "--overwrite"]));
    eventually("the Secret to hold the new token", MINUTE, || async {
        secret_token(&client, ns, "crm-apikey").await.filter(|t| t.hash() != old.hash())
    })
    .await;
    let restarted = eventually("the opted-in Deployment to be restarted", MINUTE, || async {
        deployments.get("uses-crm").await.ok().filter(|d| restarted_at(d).is_some())
    })
    .await;
    assert_eq!(generation(&restarted), generation(&uses) + 1, "one rollout");

    // Reconciles after the restart (status writes, the publisher) restart nothing more.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let later = deployments.get("uses-crm").await.unwrap();
    assert_eq!((generation(&later), restarted_at(&later)), (generation(&restarted), restarted_at(&restarted)));
    let untouched = deployments.get("bystander").await.unwrap();
    assert_eq!(generation(&untouched), generation(&bystander), "a Deployment that did not opt in is left alone");
    assert_eq!(restarted_at(&untouched), None);
}
