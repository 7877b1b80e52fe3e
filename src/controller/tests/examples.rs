//! The ApiKeys the tests create, as users write them.

pub const CRM: &str = "
apiVersion: keyward.dev/v1alpha1
kind: ApiKey
metadata: {name: crm, namespace: team-a}
spec:
  scopes: [\"orders:read\"]
  prefix: acme_live
";

pub const ROTATING: &str = "
apiVersion: keyward.dev/v1alpha1
kind: ApiKey
metadata: {name: crm, namespace: team-a}
spec:
  scopes: [\"orders:read\"]
  rotation: {every: 30d, gracePeriod: 1h}
";
