//! Discovery, as `kubectl` reads it before anything else: `/version`, `/api`, `/apis` and one
//! resource list per group version (the legacy documents; kubectl asks for aggregated
//! discovery first and falls back to these when the answer is plain JSON). The resources are
//! kube-fake-client's built-in ones and keyward's CRDs' (ApiKey, ApiKeyWebhook, ApiKeyClass, KeySet, ClusterApiKey), with short names and category.

use std::sync::LazyLock;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube_fake_client::discovery as builtin;
use serde_json::{Value, json};

use super::{ResponseBody, respond};

/// What a resource is, for discovery and for telling known paths from unknown ones.
pub struct Resource {
    /// `ApiKey`.
    pub kind: String,
    /// `apikey`.
    pub singular: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// `ak`.
    pub short_names: Vec<String>,
    /// `keyward`.
    pub categories: Vec<String>,
    /// Whether it has a status subresource.
    pub status: bool,
}

const VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

fn group_version(prefix: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = prefix.split('/').collect();
    match parts[..] {
        ["api", version] => Some(("", version)),
        ["apis", group, version] => Some((group, version)),
        _ => None,
    }
}

/// The resource `plural` under `prefix` (`api/v1`, `apis/g/v`), if this API serves it.
#[must_use]
pub fn resource(prefix: &str, plural: &str) -> Option<Resource> {
    let (group, version) = group_version(prefix)?;
    if let Some(crd) = crd_resource(group, version, plural) {
        return Some(crd);
    }
    let kind = builtin::plural_to_kind(group, version, plural)?;
    Some(Resource {
        kind: kind.to_owned(),
        singular: builtin::get_singular(group, version, kind).unwrap_or_default().to_owned(),
        namespaced: builtin::is_namespaced(group, version, kind).unwrap_or(true),
        short_names: builtin::get_short_names(group, version, kind).iter().map(|s| (*s).to_owned()).collect(),
        categories: Vec::new(),
        status: builtin::has_subresource(group, version, kind, "status"),
    })
}

/// keyward's CRDs: ApiKey, ApiKeyWebhook, ApiKeyClass, KeySet and ClusterApiKey.
///
/// Generated once per process: every request asks [`resource`] about its path, and generating
/// the five schemas is far more work than serving the request (in a debug build, enough to
/// keep both cores of a loaded CI machine busy while the demo or a test waits for answers).
pub(super) fn crds() -> &'static [CustomResourceDefinition; 5] {
    static CRDS: LazyLock<[CustomResourceDefinition; 5]> = LazyLock::new(|| {
        [
            keyward_api::crd(),
            keyward_api::webhook_crd(),
            keyward_api::class_crd(),
            keyward_api::keyset_crd(),
            keyward_api::cluster_crd(),
        ]
    });
    &CRDS
}

fn crd_resource(group: &str, version: &str, plural: &str) -> Option<Resource> {
    crds().iter().find_map(|crd| {
        let names = &crd.spec.names;
        let served = group == crd.spec.group && crd.spec.versions.iter().any(|v| v.name == version);
        (served && plural == names.plural).then(|| Resource {
            kind: names.kind.clone(),
            singular: names.singular.clone().unwrap_or_default(),
            namespaced: crd.spec.scope == "Namespaced",
            short_names: names.short_names.clone().unwrap_or_default(),
            categories: names.categories.clone().unwrap_or_default(),
            status: crd.spec.versions.iter().any(|v| v.subresources.as_ref().is_some_and(|s| s.status.is_some())),
        })
    })
}

/// Every (group, version, plural) served: kube-fake-client's built-in resources and the CRDs'.
fn all() -> Vec<(String, String, String)> {
    let mut all: Vec<(String, String, String)> = builtin::list_resources()
        .iter()
        .map(|(group, version, _kind, plural)| ((*group).to_owned(), (*version).to_owned(), (*plural).to_owned()))
        .collect();
    for crd in crds() {
        for version in &crd.spec.versions {
            all.push((crd.spec.group.clone(), version.name.clone(), crd.spec.names.plural.clone()));
        }
    }
    all
}

/// The discovery document at `path`, if it is one (GET only).
#[must_use]
pub fn answer(method: &Method, path: &str) -> Option<Response<ResponseBody>> {
    if method != Method::GET {
        return None;
    }
    let path = path.trim_end_matches('/');
    let document = match path {
        "/version" => json!({
            "major": "1", "minor": "34", "gitVersion": "v1.34.0-keyward-fake", "platform": "linux/amd64",
            "goVersion": "none: keyward's in-memory API",
        }),
        "/api" => json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
        }),
        "/apis" => groups(),
        // No OpenAPI documents: kubectl then validates nothing client-side and sends
        // `fieldValidation`, which the in-memory API ignores (docs/testing.md).
        "/openapi/v3" => json!({"paths": {}}),
        "/openapi/v2" => {
            // An empty OpenAPI v2 document (an empty protobuf message), which kubectl asks for.
            let mut empty = respond(StatusCode::OK, Bytes::new());
            empty.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/com.github.proto-openapi.spec.v2.v1.0+protobuf"),
            );
            return Some(empty);
        }
        _ => {
            let prefix = path.strip_prefix('/')?;
            let (group, version) = group_version(prefix)?;
            resources(group, version)?
        }
    };
    Some(respond(StatusCode::OK, Bytes::from(document.to_string())))
}

fn groups() -> Value {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (group, version, _) in all().into_iter().filter(|(group, _, _)| !group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, versions)) if !versions.contains(&version) => versions.push(version),
            Some(_) => {}
            None => groups.push((group, vec![version])),
        }
    }
    let groups: Vec<Value> = groups
        .iter()
        .map(|(group, versions)| {
            let listed: Vec<Value> =
                versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
            json!({"name": group, "versions": listed, "preferredVersion": listed[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resources(group: &str, version: &str) -> Option<Value> {
    let prefix = if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") };
    let mut listed = Vec::new();
    for (_, _, plural) in all().into_iter().filter(|(g, v, _)| g == group && v == version) {
        let Some(resource) = resource(&prefix, &plural) else { continue };
        let mut entry = json!({
            "name": plural, "singularName": resource.singular, "namespaced": resource.namespaced,
            "kind": resource.kind, "verbs": VERBS,
        });
        if !resource.short_names.is_empty() {
            entry["shortNames"] = json!(resource.short_names);
        }
        if !resource.categories.is_empty() {
            entry["categories"] = json!(resource.categories);
        }
        listed.push(entry);
        if resource.status {
            listed.push(json!({
                "name": format!("{plural}/status"), "singularName": "", "namespaced": resource.namespaced,
                "kind": resource.kind, "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if listed.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": listed}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywards_crds_are_generated_once_per_process_and_are_the_shipped_ones() {
        assert!(std::ptr::eq(crds(), crds()), "generated once, not once per request");
        assert_eq!(crds()[0], keyward_api::crd());
        assert_eq!(crds()[4], keyward_api::cluster_crd());
    }

    #[test]
    fn the_api_key_resource_is_discovered_with_its_short_name_and_category() {
        let list = resources("keyward.dev", "v1alpha1").unwrap();
        assert_eq!(list["resources"][0]["name"], "apikeys");
        assert_eq!(list["resources"][0]["shortNames"], json!(["ak"]));
        assert_eq!(list["resources"][0]["categories"], json!(["keyward"]));
        assert_eq!(list["resources"][1]["name"], "apikeys/status");
        assert_eq!(list["resources"][2]["name"], "apikeywebhooks");
        assert_eq!(list["resources"][2]["shortNames"], json!(["akwh"]));
        let groups = groups();
        assert!(groups["groups"].as_array().unwrap().iter().any(|g| g["name"] == "keyward.dev"), "{groups}");
        assert!(resource("api/v1", "configmaps").is_some_and(|r| r.namespaced));
        assert!(resource("api/v1", "nonsense").is_none());
        assert!(
            answer(&Method::GET, "/apis/keyward.dev/v1alpha1/namespaces/a/apikeys/k").is_none(),
            "objects are no documents"
        );
    }
}
