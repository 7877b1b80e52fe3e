//! keyward on a real Kubernetes API server: etcd, kube-apiserver and
//! kube-controller-manager 1.34 built from Kubernetes' own Go modules
//! (`tools/kube-harness`), started once for this test binary on loopback.
//! Where the in-memory API and the real server disagree, these tests are right.
//!
//! The first run builds the harness with Go (many minutes cold on 2 cores; Go's
//! build cache makes later runs link only).

mod real_cluster {
    pub mod admission;
    pub mod cluster_keys;
    pub mod cluster_usage;
    pub mod control_plane;
    #[path = "../fake_vs_real/fake.rs"]
    pub mod fake;
    pub mod fake_vs_real;
    pub mod gating;
    pub mod install;
    pub mod lifecycle;
    pub mod plugin;
    pub mod restarts;
    #[path = "../fake_vs_real/scenarios.rs"]
    pub mod scenarios;
    pub mod support;
    pub mod usage;
    pub mod usage_policy;
    pub mod webhooks;
}
