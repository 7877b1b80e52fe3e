//! keyward: API keys as Kubernetes custom resources.
//!
//! ```text
//!  ApiKey (spec) ──► operator ──► Secret (token, for clients)
//!                        │
//!                        └──────► key-set ConfigMaps (hashes only) ──► verifier ──► your service
//! ```
//!
//! The contract modules ([`token`], [`keyset`], [`scope`], [`duration`]) are
//! leaves: they depend on encoding and hashing crates, never on kube or tokio.

#![forbid(unsafe_code)]
// Test helpers take owned fixtures so that tables of cases read as plain values.
#![cfg_attr(test, allow(clippy::needless_pass_by_value))]

pub mod api;
pub mod cli;
pub mod controller;
pub mod demo;
pub mod duration;
pub mod fakeapi;
pub mod keyset;
mod net;
pub mod plan;
pub mod runtime;
pub mod scope;
pub mod token;
pub mod verifier;
