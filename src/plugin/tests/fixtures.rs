//! ApiKeys as the operator leaves them, built from YAML a reader can check by eye.

use jiff::Timestamp;

use crate::api::ApiKey;

/// 2026-12-01 12:00 UTC, the tests' "now".
pub fn now() -> Timestamp {
    "2026-12-01T12:00:00Z".parse().unwrap()
}

pub fn key(yaml: &str) -> ApiKey {
    serde_yaml::from_str(yaml).expect("fixture YAML is an ApiKey")
}

/// Ready, with a previous key in its grace period and a scheduled rotation.
pub const ROTATED: &str = "
apiVersion: keyward.dev/v1alpha1
kind: ApiKey
metadata: {name: crm, namespace: team-a, generation: 2, uid: u-1}
spec:
  displayName: CRM Integration
  scopes: [orders:read, orders:write]
  rotation: {every: 30d, gracePeriod: 1h}
status:
  observedGeneration: 2
  state: Rotating
  prefix: kw_Ab3d
  secretName: crm-apikey
  keySet: default
  currentKey:
    keyId: 1111aaaa2222
    hash: sha256:1111aaaa2222bbbb3333cccc4444dddd5555eeee6666ffff7777000088889999
    notBefore: '2026-12-01T11:30:00Z'
  previousKey:
    keyId: 9999ffff8888
    hash: sha256:9999ffff8888eeee7777dddd6666cccc5555bbbb4444aaaa3333222211110000
    notBefore: '2026-11-01T11:30:00Z'
    notAfter: '2026-12-01T12:30:00Z'
  lastRotatedAt: '2026-12-01T11:30:00Z'
  nextRotationAt: '2026-12-31T11:30:00Z'
  conditions:
  - {type: Ready, status: 'True', reason: Rotating, message: previous token accepted until 12:30, lastTransitionTime: '2026-11-01T11:30:00Z', observedGeneration: 2}
";

/// Ready=False for an invalid spec.
pub const INVALID: &str = "
apiVersion: keyward.dev/v1alpha1
kind: ApiKey
metadata: {name: bad, namespace: team-a, generation: 1}
spec: {scopes: [orders:read], rotation: {schedule: 'not a cron'}}
status:
  observedGeneration: 1
  state: Error
  conditions:
  - {type: Ready, status: 'False', reason: InvalidSpec, message: 'spec.rotation.schedule: not a cron expression', lastTransitionTime: '2026-12-01T11:59:00Z'}
";
