//! Process plumbing the binaries share: the one clock, logging, the shutdown signal, the admin listener
//! and finding the cluster from a kubeconfig.
//!
//! `keyward operator`, `keyward verifier`, `keyward demo` and
//! `keyward fake-apiserver` each set these up the same way through here, so a
//! change of policy (where logs go, which signals stop a process, what
//! `/readyz` answers with) is made once.

pub mod admin;
pub mod clock;
pub mod kubeconfig;
pub mod shutdown;
pub mod telemetry;
