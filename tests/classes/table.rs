//! `tests/classes/cases.yaml`, read by both judges: the operator's rules (tests/classes.rs)
//! and the real API server's ValidatingAdmissionPolicy (tests/real_cluster_classes.rs).

// Each judge uses a part.
#![allow(dead_code)]

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keyward::api::{ApiKey, ApiKeyClass, ApiKeyClassSpec, DEFAULT_CLASS_ANNOTATION};
use serde_json::Value;

#[derive(serde::Deserialize)]
pub struct Table {
    pub classes: BTreeMap<String, ClassEntry>,
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
pub struct ClassEntry {
    #[serde(default)]
    pub default: bool,
    pub spec: ApiKeyClassSpec,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Case {
    pub name: String,
    pub namespace: String,
    pub spec: Value,
    #[serde(default)]
    pub expires_in: Option<String>,
    #[serde(default)]
    pub refused: Vec<String>,
    #[serde(default)]
    pub held_back: Option<String>,
}

pub fn table() -> Table {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/classes/cases.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).expect("tests/classes/cases.yaml parses")
}

impl Table {
    /// The classes as objects, the default one annotated.
    pub fn class_objects(&self) -> Vec<ApiKeyClass> {
        self.classes
            .iter()
            .map(|(name, entry)| {
                let mut class = ApiKeyClass::new(name, entry.spec.clone());
                if entry.default {
                    class.metadata.annotations =
                        Some([(DEFAULT_CLASS_ANNOTATION.to_owned(), "true".to_owned())].into());
                }
                class
            })
            .collect()
    }
}

impl Case {
    /// The case's ApiKey as created at `now`: `expiresAt` is `expiresIn` after it.
    pub fn key(&self, index: usize, now: Timestamp) -> ApiKey {
        let mut spec = self.spec.clone();
        if let Some(text) = &self.expires_in {
            let ahead: keyward::duration::KeyDuration = text.parse().expect("expiresIn is a duration");
            let at = now + SignedDuration::try_from(ahead.get()).unwrap();
            spec["expiresAt"] = Value::String(at.to_string());
        }
        let mut key = ApiKey::new(&format!("case-{index}"), serde_json::from_value(spec).expect("the spec decodes"));
        key.metadata.namespace = Some(self.namespace.clone());
        key.metadata.creation_timestamp = Some(Time(now));
        key
    }
}
