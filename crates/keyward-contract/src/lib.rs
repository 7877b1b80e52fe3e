//! The contract between keyward's operator and its verifier.
//!
//! ```text
//!  token ──┐
//!  scope ──┼──► keyset (records, shard format) ──► configmap (the stored form in the API)
//!  duration┘
//! ```
//!
//! Everything here is a leaf: it depends on encoding and hashing crates and on
//! k8s-openapi's `ConfigMap` type, never on kube or tokio, so the verifier can
//! use it without a client and the format can be read without a cluster.

#![forbid(unsafe_code)]
// Test helpers take owned fixtures so that tables of cases read as plain values.
#![cfg_attr(test, allow(clippy::needless_pass_by_value))]

pub mod configmap;
pub mod duration;
pub mod keyset;
pub mod scope;
pub mod token;
pub mod usage;
