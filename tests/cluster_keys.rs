//! ClusterApiKeys without a cluster: the example in `examples/cluster-keys/` passes the CRD's
//! schema and CEL rules and selects the namespaces it says; the CEL table the real API server
//! judges in `tests/real_cluster/cluster_keys.rs` gets the same verdicts from kube-cel.

use std::collections::BTreeMap;
use std::path::Path;

use keyward::api::{ClusterApiKey, cluster_crd};
use keyward::plan::cluster::selected;
use serde::Deserialize;
use serde_json::{Value, json};

fn schema() -> Value {
    serde_json::to_value(cluster_crd()).unwrap()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Every reason admission would refuse `object`: schema violations by path, then CEL messages.
fn admission_errors(object: &Value, old: Option<&Value>) -> Vec<String> {
    let schema = schema();
    let validator = jsonschema::validator_for(&schema).expect("the CRD schema is valid JSON Schema");
    let mut errors: Vec<String> =
        validator.iter_errors(object).map(|e| format!("{}: {}", e.instance_path(), e.kind().keyword())).collect();
    if let Err(cel) = kube_cel::Validator::new().validate(&schema, object, old) {
        errors.extend(cel.iter().map(|e| e.message.clone()));
    }
    errors
}

fn object(spec: &Value) -> Value {
    json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ClusterApiKey", "metadata": {"name": "k"}, "spec": spec})
}

fn example_docs(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster-keys").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|doc| Value::deserialize(doc).unwrap()).collect()
}

#[test]
fn the_example_cluster_key_passes_admission_and_selects_the_agency_locations_only() {
    let docs = example_docs("agency-key.yaml");
    assert_eq!(docs.len(), 1);
    assert_eq!(admission_errors(&docs[0], None), Vec::<String>::new());
    let key: ClusterApiKey = serde_json::from_value(docs[0].clone()).unwrap();

    let namespaces: Vec<(String, BTreeMap<String, String>)> = example_docs("namespaces.yaml")
        .into_iter()
        .map(|ns| {
            let name = ns["metadata"]["name"].as_str().unwrap().to_owned();
            let mut labels: BTreeMap<String, String> =
                serde_json::from_value(ns["metadata"]["labels"].clone()).unwrap_or_default();
            // The API server labels every namespace with its name.
            labels.insert(keyward::api::NAMESPACE_NAME_LABEL.to_owned(), name.clone());
            (name, labels)
        })
        .collect();
    let chosen = selected(&key, namespaces.iter().map(|(n, l)| (n.as_str(), l)));
    assert_eq!(chosen, ["location-leeds", "location-london"]);
    assert!(
        namespaces.iter().any(|(n, _)| n == &key.spec.secret_namespace),
        "the Secret's namespace is in the example"
    );
}

#[test]
fn kube_cel_gives_the_real_servers_verdicts_on_cluster_keys() {
    let base = json!({"scopes": ["orders:read"], "secretNamespace": "platform",
        "namespaceSelector": {"matchLabels": {"agency": "acme"}}});
    let with = |extra: Value| {
        let mut spec = base.clone();
        json_patch::merge(&mut spec, &extra);
        spec
    };
    let every = json!({"namespaceSelector": {"matchLabels": null,
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "Exists"}]}});
    let table: Vec<(&str, Value, Option<&str>)> = vec![
        ("a selector by label", base.clone(), None),
        ("every namespace, said explicitly", with(every), None),
        (
            "an empty selector",
            with(json!({"namespaceSelector": {"matchLabels": null}})),
            Some("namespaceSelector must not be empty"),
        ),
        ("a class", with(json!({"className": "partner"})), Some("className is for namespaced ApiKeys")),
        ("usage expiry (usage is counted)", with(json!({"expireAfterUnused": "30d"})), None),
        ("no secretNamespace", with(json!({"secretNamespace": null})), Some("/spec: required")),
        ("a bad scope", with(json!({"scopes": ["orders:delete"]})), Some("/spec/scopes/0: pattern")),
        (
            "In without values",
            with(json!({"namespaceSelector": {"matchExpressions": [{"key": "agency", "operator": "In"}]}})),
            Some("In and NotIn need values"),
        ),
    ];
    for (case, spec, refusal) in table {
        let errors = admission_errors(&object(&spec), None);
        match refusal {
            None => assert_eq!(errors, Vec::<String>::new(), "{case}"),
            Some(message) => {
                assert!(errors.iter().any(|e| e.starts_with(message)), "{case}: {message:?} in {errors:?}");
            }
        }
    }
    let revoked = with(json!({"revoked": true}));
    for (changed, message) in [
        (with(json!({"revoked": true, "secretNamespace": "elsewhere"})), "secretNamespace cannot be changed"),
        (with(json!({"revoked": false})), "revoked is permanent"),
    ] {
        let errors = admission_errors(&object(&changed), Some(&object(&revoked)));
        assert!(errors.iter().any(|e| e.starts_with(message)), "{message:?} in {errors:?}");
    }
}
