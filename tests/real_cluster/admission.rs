//! The shared admission table (`tests/admission/cases.yaml`) sent to the real API server:
//! its verdict must be the one `tests/admission.rs` gets from kube-cel and the schema.
//! Also what only a real server does: defaulting, pruning of unknown fields, and the
//! `revoked` transition rule under server-side apply.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use keyward::api::ApiKey;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use super::control_plane::client_from;
use super::scenarios::{api_key, api_keys, cases, names_expected, verdict};
use super::support::{cluster, run_ok};

const NS: &str = "admission";

#[tokio::test]
async fn the_api_server_and_kube_cel_agree_on_every_shared_admission_case() {
    let plane = cluster();
    run_ok(plane.kubectl().args(["create", "namespace", NS]));
    let client = client_from(plane.kubeconfig()).await;
    let api = api_keys(&client, NS);
    let mut disagreements = Vec::new();
    for (index, case) in cases().iter().enumerate() {
        match (verdict(&api, index, case).await, case.refused.is_empty()) {
            (Ok(()), true) => {}
            (Ok(()), false) => {
                disagreements.push(format!("{}: accepted, kube-cel refuses ({:?})", case.name, case.refused));
            }
            (Err(message), true) => disagreements.push(format!("{}: refused ({message}), kube-cel accepts", case.name)),
            (Err(message), false) => {
                for expected in case.refused.iter().filter(|e| !names_expected(&message, e)) {
                    disagreements
                        .push(format!("{}: the API server's refusal does not name {expected:?}: {message}", case.name));
                }
            }
        }
    }
    assert!(disagreements.is_empty(), "the API server and kube-cel disagree:\n{}", disagreements.join("\n"));
}

#[tokio::test]
async fn the_api_server_defaults_active_revoked_and_key_set_and_prunes_unknown_fields() {
    let plane = cluster();
    run_ok(plane.kubectl().args(["create", "namespace", "admission-defaults"]));
    let client = client_from(plane.kubeconfig()).await;
    let raw = api_keys(&client, "admission-defaults");
    let mut object = api_key("defaults", &json!({"scopes": ["a:read"], "bogus": 1}));
    object.data["spec"]["rotation"] = json!({"every": "30d", "alsoBogus": true});
    let stored =
        raw.create(&PostParams::default(), &object).await.expect("an update-style create prunes, never refuses");
    let spec = &stored.data["spec"];
    assert_eq!(spec["active"], json!(true), "{spec}");
    assert_eq!(spec["revoked"], json!(false), "{spec}");
    assert_eq!(spec["keySet"], json!("default"), "{spec}");
    assert!(
        spec.get("bogus").is_none() && spec["rotation"].get("alsoBogus").is_none(),
        "unknown fields pruned: {spec}"
    );

    let typed: Api<ApiKey> = Api::namespaced(client, "admission-defaults");
    let key = typed.get("defaults").await.unwrap();
    assert!(key.spec.active && !key.spec.revoked && key.spec.key_set == "default");
}

#[tokio::test]
async fn server_side_apply_refuses_unknown_fields_and_the_installed_crd_matches_keyward_crd() {
    let plane = cluster();
    let mut child = plane
        .kubectl()
        .args(["apply", "--server-side", "--dry-run=server", "-n", "default", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        b"apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: x}\nspec: {scopes: [a:read], bogus: 1}\n",
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("bogus"), "apply names the unknown field: {stderr}");

    // What the server stores is what `keyward crd` generates (schema, columns, names).
    let client = client_from(plane.kubeconfig()).await;
    let installed = Api::<CustomResourceDefinition>::all(client).get("apikeys.keyward.dev").await.unwrap();
    let generated = keyward::api::crd();
    assert_eq!(
        serde_json::to_value(&installed.spec.versions[0].schema).unwrap(),
        serde_json::to_value(&generated.spec.versions[0].schema).unwrap(),
        "the installed schema is the generated one"
    );
    let mut names = generated.spec.names.clone();
    names.list_kind.get_or_insert_with(|| "ApiKeyList".to_owned()); // the server's default
    assert_eq!(installed.spec.names, names);
    assert_eq!(
        installed.spec.versions[0].additional_printer_columns,
        generated.spec.versions[0].additional_printer_columns
    );
}
