//! keyward's test kit: what tests, benches and `keyward demo` stand on, and the product never links.
//!
//! - [`fakeapi`]: the in-memory Kubernetes API (kube-fake-client plus a watch
//!   layer), built one way ([`fakeapi::FakeCluster`]) and servable over HTTP
//!   ([`fakeapi::server`]).
//! - [`kubelet`]: ConfigMap volumes written the way kubelet writes them.
//! - [`fixtures`]: tokens, records and key sets that read like prose.
//! - [`receiver`]: a webhook receiver on loopback that records requests and answers as scripted.
//! - [`wait`]: waiting for what must happen, never asserting how fast.

#![forbid(unsafe_code)]

pub mod fakeapi;
pub mod fixtures;
pub mod kubelet;
pub mod receiver;
pub mod wait;

/// kube-fake-client's interceptors and errors, for tests that make the in-memory API fail.
pub use kube_fake_client::{Error as FakeError, interceptor};
