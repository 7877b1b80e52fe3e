//! Reading what a key's ApiKeyClass check needs: the classes and the labels of a namespace.
//!
//! Reconcile and the publisher read both afresh (a LIST of the few classes and a GET of
//! one namespace) rather than from a cache, so a class that narrowed is in force on the
//! next reconcile or key-set rebuild. The ApiKeyClass CRD not being installed reads as no
//! classes: keys that name a class are then held back (`ClassNotFound`), none widens.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::api::ApiKeyClass;

use super::Error;

/// Every ApiKeyClass, and the labels of `namespace`.
pub(super) struct ClassFacts {
    pub classes: Vec<ApiKeyClass>,
    pub namespace_labels: BTreeMap<String, String>,
}

/// Read the classes and the labels of `namespace`.
pub(super) async fn read(client: &Client, namespace: &str) -> Result<ClassFacts, Error> {
    let classes = match Api::<ApiKeyClass>::all(client.clone()).list(&ListParams::default()).await {
        Ok(list) => list.items,
        // The ApiKeyClass CRD is not installed: there are no classes.
        Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
        Err(e) => return Err(Error::kube("list ApiKeyClasses")(e)),
    };
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace_labels = namespaces
        .get_metadata_opt(namespace)
        .await
        .map_err(Error::kube("get Namespace"))?
        .and_then(|ns| ns.metadata.labels)
        .unwrap_or_default();
    Ok(ClassFacts { classes, namespace_labels })
}

impl ClassFacts {
    /// The class `key` is held to.
    pub(super) fn resolve(&self, key: &crate::api::ApiKey) -> crate::plan::class::ClassView {
        crate::plan::class::resolve(key, &self.classes, &self.namespace_labels)
    }
}
