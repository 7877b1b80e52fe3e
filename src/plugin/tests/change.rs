//! Which appliers declare a field the plugin is about to change.

use crate::plugin::change::declared_by;

use super::fixtures::key;

const MANAGED: &str = "
apiVersion: keyward.dev/v1alpha1
kind: ApiKey
metadata:
  name: crm
  namespace: team-a
  managedFields:
  - manager: argocd-controller
    operation: Apply
    apiVersion: keyward.dev/v1alpha1
    fieldsType: FieldsV1
    fieldsV1: {f:metadata: {f:annotations: {f:keyward.dev/rotate: {}}}, f:spec: {f:active: {}, f:scopes: {}}}
  - manager: kubectl-patch
    operation: Update
    apiVersion: keyward.dev/v1alpha1
    fieldsType: FieldsV1
    fieldsV1: {f:spec: {f:revoked: {}}}
  - manager: kubectl-keyward
    operation: Apply
    apiVersion: keyward.dev/v1alpha1
    fieldsType: FieldsV1
    fieldsV1: {f:spec: {f:active: {}}}
spec: {scopes: [orders:read]}
";

#[test]
fn an_applier_declaring_the_field_is_named() {
    let key = key(MANAGED);
    assert_eq!(declared_by(&key, &["f:spec", "f:active"]), vec!["argocd-controller".to_owned()]);
    assert_eq!(
        declared_by(&key, &["f:metadata", "f:annotations", "f:keyward.dev/rotate"]),
        vec!["argocd-controller".to_owned()]
    );
}

#[test]
fn one_off_updates_and_the_plugin_itself_are_not_appliers() {
    let key = key(MANAGED);
    assert!(declared_by(&key, &["f:spec", "f:revoked"]).is_empty(), "kubectl patch does not apply again");
    assert!(declared_by(&key, &["f:spec", "f:expiresAt"]).is_empty());
}
