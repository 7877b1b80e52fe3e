//! Tests of the verifier: decisions, loading and the HTTP surface, in process.

mod decision;
mod fixtures;
mod props;
