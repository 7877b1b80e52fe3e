//! The lifecycle's specification: plans for every transition with a fixed clock, one topic per file.

mod anomalies;
mod cluster_usage;
mod create;
mod deletion;
mod disable;
mod expiry;
pub(super) mod fixtures;
mod moves;
mod notices;
mod properties;
mod publishing;
mod revoke;
mod rotation;
mod tampering;
mod validation;
