//! Controller tests against kube-fake-client, one topic per file: each lifecycle path, injected faults, idempotence, no leaks.

mod classes;
mod cluster;
mod controller_loop;
mod create;
mod deletion;
mod disable;
mod examples;
mod expiry;
mod faults;
mod gating;
mod generations;
pub(super) mod harness;
mod keyset;
mod lease;
mod moves;
mod readiness;
mod restarts;
mod revoke;
mod rotation;
mod tampering;
mod undecodable;
mod usage;
mod usage_pace;
mod usage_reads;
mod usage_repair;
mod validation;
mod writes;
