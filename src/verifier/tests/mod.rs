//! Tests of the verifier: decisions, loading and the HTTP surface, in process.

mod decision;
pub(super) mod fixtures;
mod props;
mod reload;
