//! The operator's ApiKeyClass rules (`keyward::plan::class`) against the shared table
//! `tests/classes/cases.yaml`, which the real API server's ValidatingAdmissionPolicy
//! also judges (tests/real_cluster_classes.rs): one table, two judges. Also the
//! example classes and keys of `examples/classes/`.

#[path = "classes/table.rs"]
mod table;

use jiff::{SignedDuration, Timestamp};
use keyward::plan::class::{ClassProblem, ClassView, problem, resolve};

const DEFAULT_GRACE: SignedDuration = SignedDuration::from_hours(1);

#[test]
fn the_operator_judges_every_shared_class_case_as_the_table_says() {
    let table = table::table();
    assert!(table.cases.len() >= 30, "the shared table holds every case, found {}", table.cases.len());
    let classes = table.class_objects();
    let now: Timestamp = "2026-03-01T12:00:00Z".parse().unwrap();
    let mut wrong = Vec::new();
    for (index, case) in table.cases.iter().enumerate() {
        let key = case.key(index, now);
        let view = resolve(&key, &classes, &table.namespaces[&case.namespace]);
        let verdict = problem(&key, &view, DEFAULT_GRACE);
        // What admission can see: rule violations. A missing class is the operator's alone.
        let messages: Vec<String> = match &verdict {
            Some(ClassProblem::Violations(v)) => v.iter().map(ToString::to_string).collect(),
            _ => Vec::new(),
        };
        if messages != case.refused {
            wrong.push(format!("{}: expected {:?}, the operator says {:?}", case.name, case.refused, messages));
        }
        let held_back =
            verdict.as_ref().filter(|p| !matches!(p, ClassProblem::Violations(_))).map(ClassProblem::reason);
        if held_back != case.held_back.as_deref() {
            wrong.push(format!("{}: held back {:?}, expected {:?}", case.name, held_back, case.held_back));
        }
    }
    assert!(wrong.is_empty(), "the operator disagrees with the table:\n{}", wrong.join("\n"));
}

#[test]
fn keys_naming_no_class_belong_to_the_one_default_class_and_two_defaults_hold_keys_back() {
    let table = table::table();
    let mut classes = table.class_objects();
    let key = table.cases[0].key(0, Timestamp::UNIX_EPOCH);
    assert!(key.spec.class_name.is_none());
    let labels = &table.namespaces["class-client"];
    assert!(matches!(resolve(&key, &classes, labels), ClassView::Found(c) if c.name == "customers"));

    let partners = classes.iter_mut().find(|c| c.metadata.name.as_deref() == Some("partners")).unwrap();
    partners.metadata.annotations =
        Some([(keyward::api::DEFAULT_CLASS_ANNOTATION.to_owned(), "true".to_owned())].into());
    let view = resolve(&key, &classes, labels);
    assert_eq!(view, ClassView::AmbiguousDefault(vec!["customers".to_owned(), "partners".to_owned()]));
    let held = problem(&key, &view, DEFAULT_GRACE).expect("two defaults hold the key back");
    assert_eq!(held.reason(), "ClassAmbiguous");
    assert!(held.message().contains("customers, partners"), "{}", held.message());

    // No default and no className: no class applies (classes are opt-in until one is default).
    let none: Vec<_> = classes.into_iter().filter(|c| !keyward::plan::class::is_default(c)).collect();
    assert_eq!(resolve(&key, &none, labels), ClassView::Unclassed);
    assert_eq!(problem(&key, &ClassView::Unclassed, DEFAULT_GRACE), None);
}

/// Every document of a YAML file in examples/classes/, `EXPIRES_AT` replaced by `expires_at`.
fn example_docs<T: serde::de::DeserializeOwned>(file: &str, expires_at: &str) -> Vec<T> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/classes").join(file);
    let text = std::fs::read_to_string(path).unwrap().replace("EXPIRES_AT", expires_at);
    serde_yaml::Deserializer::from_str(&text).map(|doc| serde::Deserialize::deserialize(doc).unwrap()).collect()
}

#[test]
fn every_example_key_keeps_its_example_class_in_its_example_namespace() {
    let now: Timestamp = "2026-03-01T12:00:00Z".parse().unwrap();
    let classes: Vec<keyward::api::ApiKeyClass> = example_docs("classes.yaml", "");
    assert_eq!(classes.len(), 3, "client, partner, internal");
    let namespaces: Vec<k8s_openapi::api::core::v1::Namespace> = example_docs("namespaces.yaml", "");
    let dated = (now + SignedDuration::from_hours(24 * 60)).to_string();
    let mut keys: Vec<keyward::api::ApiKey> = example_docs("keys.yaml", "");
    keys.extend(example_docs::<keyward::api::ApiKey>("client-key.yaml", &dated));
    assert_eq!(keys.len(), 3, "one key per class");
    for mut key in keys {
        key.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        let namespace = namespaces.iter().find(|n| n.metadata.name == key.metadata.namespace).unwrap();
        let view = resolve(&key, &classes, &namespace.metadata.labels.clone().unwrap_or_default());
        assert!(matches!(&view, ClassView::Found(c) if Some(&c.name) == key.spec.class_name.as_ref()), "{view:?}");
        assert_eq!(problem(&key, &view, DEFAULT_GRACE), None, "{:?} keeps its class", key.metadata.name);
        // The same key in another example namespace breaks its class's namespaceSelector.
        let elsewhere = namespaces.iter().find(|n| n.metadata.name != key.metadata.namespace).unwrap();
        let view = resolve(&key, &classes, &elsewhere.metadata.labels.clone().unwrap_or_default());
        let Some(ClassProblem::Violations(v)) = problem(&key, &view, DEFAULT_GRACE) else { panic!("{view:?}") };
        assert!(v.iter().any(|v| v.rule == "namespaceSelector"), "{v:?}");
    }
}
