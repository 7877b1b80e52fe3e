//! The verifier sidecar: decides, for every request to the service beside it, whether its Bearer token may do what the request asks.
//!
//! ```text
//!  key-set dirs ──► loader (reload, fail closed) ──► ArcSwap<KeyIndex>
//!                                                        │
//!  request ──► bearer ──► Token::parse ──► SHA-256 ──► decide ──► routes, rate limit
//!                                                        │
//!                              forward-auth answer  or  proxy to the upstream
//! ```
//!
//! The decision ([`decision::decide`]) is a pure function of the request, the
//! loaded keys, the routes and the time; everything around it is plumbing.
//! Only [`api_source`] (the `--watch-keyset` input) and [`api_report`] (the
//! usage report) depend on kube.

pub mod api_report;
pub mod api_source;
pub mod audit;
pub mod bearer;
pub mod clock;
pub mod conns;
pub mod decision;
pub mod index;
pub mod loader;
pub mod metrics;
pub mod ratelimit;
pub mod respond;
pub mod routes;
pub mod server;
pub mod service;
pub mod table;
pub mod usage;

pub use server::{Config, Hardening, Running, run, start};

#[cfg(test)]
mod tests;
