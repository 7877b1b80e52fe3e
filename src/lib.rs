//! keyward: API keys as Kubernetes custom resources.
//!
//! ```text
//!  ApiKey (spec) ──► operator ──► Secret (token, for clients)
//!                        │
//!                        └──────► key-set ConfigMaps (hashes only) ──► verifier ──► your service
//! ```
//!
//! The contract ([`token`], [`keyset`], [`scope`], [`duration`] and the
//! key set's stored form, [`configmap`]) is its own crate, `keyward-contract`,
//! which depends on encoding and hashing crates, never on kube or tokio; the
//! ApiKey types ([`api`]) are `keyward-api`. Both are re-exported here under
//! their old paths, so `crate::token` and `keyward::api` read as before. The
//! in-memory API and other test scaffolding live in `keyward-testkit`, which
//! only tests, benches and the `demo` feature link.

#![forbid(unsafe_code)]
// Test helpers take owned fixtures so that tables of cases read as plain values.
#![cfg_attr(test, allow(clippy::needless_pass_by_value))]

pub use keyward_api as api;
pub use keyward_contract::{configmap, duration, keyset, scope, token, usage};

pub mod cli;
pub mod controller;
#[cfg(feature = "demo")]
pub mod demo;
mod net;
pub mod notice;
pub mod plan;
pub mod plugin;
pub mod runtime;
pub mod verifier;
