//! Helpers shared by the verifier's black-box tests: tokens, records, and key-set
//! directories written the way kubelet writes ConfigMap volumes.

#![allow(dead_code, clippy::missing_panics_doc)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use jiff::Timestamp;
use keyward::keyset::{self, KeySetId, RateLimit, Record, RecordState};
use keyward::token::{Prefix, Token};
use keyward::verifier::decision::Now;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// A token minted from a fixed seed.
pub fn token(seed: u64) -> Token {
    Token::generate(&Prefix::default(), &mut StdRng::seed_from_u64(seed))
}

pub fn bearer(token: &Token) -> String {
    format!("Bearer {}", token.expose())
}

pub fn time(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Noon on 2026-11-22, 1000 s into the process.
pub fn now() -> Now {
    Now { wall: time("2026-11-22T12:00:00Z"), monotonic: std::time::Duration::from_secs(1000) }
}

/// An active record for `token` with `scopes`, valid from 2026-11-01 on.
pub fn record(token: &Token, scopes: &[&str]) -> Record {
    let hash = token.hash();
    Record {
        hash,
        key_id: hash.key_id(),
        namespace: "team-a".into(),
        name: "crm".into(),
        scopes: scopes.iter().map(|s| s.parse().unwrap()).collect(),
        not_before: time("2026-11-01T00:00:00Z"),
        not_after: None,
        state: RecordState::Active,
        rate_limit: None,
    }
}

pub fn with_state(mut record: Record, state: RecordState) -> Record {
    record.state = state;
    record
}

pub fn with_not_after(mut record: Record, not_after: &str) -> Record {
    record.not_after = Some(time(not_after));
    record
}

pub fn with_limit(mut record: Record, requests: u32, period: &str, burst: u32) -> Record {
    record.rate_limit = Some(RateLimit { requests, period: period.parse().unwrap(), burst });
    record
}

/// The shard files of key set `team-a/<name>` at `generation`, as (file name, text).
pub fn shard_files(name: &str, generation: u64, records: &[Record], max_bytes: usize) -> Vec<(String, String)> {
    let id = KeySetId { namespace: "team-a".into(), name: name.into() };
    keyset::encode(&id, generation, records, max_bytes)
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, text)| (keyset::shard_file_name(name, i + 1), text))
        .collect()
}

/// A directory that changes the way kubelet's atomic writer changes a ConfigMap volume:
/// each version in a new hidden timestamped directory, `..data` swapped to it
/// by renaming a fresh symlink over it, and visible names linked through `..data`.
pub struct KubeletDir {
    pub path: PathBuf,
    version: usize,
    _temp: tempfile::TempDir,
}

impl KubeletDir {
    pub fn new() -> KubeletDir {
        let temp = tempfile::tempdir().unwrap();
        KubeletDir { path: temp.path().to_owned(), version: 0, _temp: temp }
    }

    /// Publish a new version holding exactly `files`.
    pub fn publish(&mut self, files: &[(String, String)]) {
        let files: Vec<(String, Vec<u8>)> = files.iter().map(|(n, t)| (n.clone(), t.clone().into_bytes())).collect();
        self.publish_bytes(&files);
    }

    /// Publish a new version holding exactly `files`, as bytes (gzip shards are binary).
    pub fn publish_bytes(&mut self, files: &[(String, Vec<u8>)]) {
        self.version += 1;
        let version_name = format!("..2026_11_22_12_00_00.{:06}", self.version);
        let version_dir = self.path.join(&version_name);
        std::fs::create_dir(&version_dir).unwrap();
        for (name, text) in files {
            std::fs::write(version_dir.join(name), text).unwrap();
        }
        let old = std::fs::read_link(self.path.join("..data")).ok();
        let tmp = self.path.join("..data_tmp");
        std::os::unix::fs::symlink(&version_name, &tmp).unwrap();
        std::fs::rename(&tmp, self.path.join("..data")).unwrap();
        for (name, _) in files {
            let visible = self.path.join(name);
            if std::fs::symlink_metadata(&visible).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(name), &visible).unwrap();
            }
        }
        // Visible links whose file is gone now dangle; kubelet removes them, and so do we.
        for entry in std::fs::read_dir(&self.path).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !files.iter().any(|(f, _)| *f == name) {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(self.path.join(old)).unwrap();
        }
    }

    /// Publish key set `team-a/<name>` at `generation` as one shard.
    pub fn publish_set(&mut self, name: &str, generation: u64, records: &[Record]) {
        self.publish(&shard_files(name, generation, records, keyset::DEFAULT_MAX_SHARD_BYTES));
    }
}

/// What the test upstream saw of one request.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
}

/// A small upstream: echoes what it saw as JSON in a header, and the request body as the response body.
pub struct Upstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
}

pub async fn upstream(delay: Duration) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (conns, reqs) = (Arc::clone(&connections), Arc::clone(&requests));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            conns.fetch_add(1, Ordering::SeqCst);
            let reqs = Arc::clone(&reqs);
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                reqs.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(delay).await;
                    let (parts, body) = request.into_parts();
                    let body = body.collect().await.unwrap().to_bytes();
                    let seen = Seen {
                        method: parts.method.to_string(),
                        uri: parts.uri.to_string(),
                        headers: parts
                            .headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
                            .collect(),
                        body_len: body.len(),
                    };
                    let response = Response::builder()
                        .header("x-seen", serde_json::to_string(&seen).unwrap())
                        .header("x-app", "yes")
                        .body(Full::new(body))
                        .unwrap();
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    Upstream { addr, connections, requests }
}
