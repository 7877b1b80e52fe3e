//! The test harness: kube-fake-client with every write recorded, faults injected and a controllable clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use keyward_testkit::fakeapi::FakeCluster;
use keyward_testkit::{FakeError, interceptor};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rand::SeedableRng;
use serde_json::{Value, json};

use crate::api::ApiKey;
use crate::keyset::{Record, decode_shard};
use crate::plan::Settings;
use crate::token::{KeyHash, Token};

use super::super::{Context, Publisher, error_policy, reconcile};

pub const NS: &str = "team-a";
pub const T0: &str = "2026-01-01T00:00:00Z";

/// A fault to inject into the next write whose target contains `target`.
#[derive(Clone)]
pub struct Fault {
    pub target: &'static str,
    pub conflict: bool,
}

/// The fake API plus a recording of every write and a controllable clock.
pub struct Harness {
    pub client: Client,
    pub ctx: Arc<Context>,
    pub clock: Arc<Mutex<Timestamp>>,
    pub tap: Arc<Tap>,
    pub minted: Arc<Mutex<Vec<String>>>,
}

/// Sees every write: records it, injects faults, and can stop the "operator".
#[derive(Default)]
pub struct Tap {
    pub writes: Mutex<Vec<(String, Value)>>,
    pub faults: Mutex<Vec<Fault>>,
    /// Writes left before the operator process "dies": from then on every write fails.
    pub budget: Mutex<Option<usize>>,
}

impl Tap {
    pub fn record(&self, target: String, body: &Value) -> Result<Option<Value>, FakeError> {
        if let Some(left) = self.budget.lock().unwrap().as_mut() {
            if *left == 0 {
                return Err(FakeError::Internal("operator stopped".to_owned()));
            }
            *left -= 1;
        }
        let mut pending = self.faults.lock().unwrap();
        if let Some(i) = pending.iter().position(|f| target.contains(f.target)) {
            let fault = pending.remove(i);
            return Err(if fault.conflict {
                FakeError::Conflict("injected conflict".to_owned())
            } else {
                FakeError::Internal("injected failure".to_owned())
            });
        }
        self.writes.lock().unwrap().push((target, body.clone()));
        Ok(None)
    }
}

/// What a write is aimed at, as far as the interceptor context tells.
fn target_of(verb: &str, name: &str, body: &Value) -> String {
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or("");
    format!("{verb} {kind} {name}")
}

pub async fn harness(settings: Settings) -> Harness {
    let tap = Arc::new(Tap::default());
    let (t1, t2, t3, t4) = (tap.clone(), tap.clone(), tap.clone(), tap.clone());
    let funcs = interceptor::Funcs::new()
        .create(move |ctx| {
            let name = ctx.object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_owned();
            t1.record(target_of("create", &name, ctx.object), ctx.object)
        })
        .patch(move |ctx| t2.record(target_of("patch", ctx.name, ctx.patch), ctx.patch))
        .patch_status(move |ctx| t3.record(format!("status {}", ctx.name), ctx.patch))
        .delete(move |ctx| t4.record(format!("delete {}", ctx.name), &Value::Null));
    let client = FakeCluster::new().with_interceptor_funcs(funcs).plain_client().await.expect("fake client builds");
    let clock = Arc::new(Mutex::new(T0.parse::<Timestamp>().unwrap()));
    let minted: Arc<Mutex<Vec<String>>> = Arc::default();
    let clock_fn = {
        let clock = clock.clone();
        Arc::new(move || *clock.lock().unwrap())
    };
    let mint_fn = {
        let minted = minted.clone();
        let rng = Mutex::new(rand::rngs::StdRng::seed_from_u64(42));
        Arc::new(move |prefix: &crate::token::Prefix| {
            let token = Token::generate(prefix, &mut *rng.lock().unwrap());
            minted.lock().unwrap().push(token.expose().to_owned());
            token
        })
    };
    let publisher = Arc::new(Publisher::new(client.clone(), clock_fn.clone(), Duration::from_millis(10)));
    let ctx = Arc::new(Context::with(client.clone(), settings, publisher, clock_fn, mint_fn));
    Harness { client, ctx, clock, tap, minted }
}

impl Harness {
    pub fn keys(&self) -> Api<ApiKey> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub async fn create(&self, yaml: &str) -> ApiKey {
        let key: ApiKey = serde_yaml::from_str(yaml).expect("test YAML parses");
        self.keys().create(&PostParams::default(), &key).await.expect("create ApiKey")
    }

    pub async fn get(&self, name: &str) -> ApiKey {
        self.keys().get(name).await.expect("ApiKey exists")
    }

    /// Reconcile `name` until it succeeds, the way the runtime retries.
    pub async fn reconcile(&self, name: &str) -> kube::runtime::controller::Action {
        for _ in 0..10 {
            let key = Arc::new(self.get(name).await);
            match reconcile(key.clone(), self.ctx.clone()).await {
                Ok(action) => return action,
                Err(e) => {
                    let _ = error_policy(key, &e, self.ctx.clone());
                }
            }
        }
        panic!("reconcile of {name} did not succeed in 10 attempts");
    }

    /// One reconcile and publisher flush, as a (possibly dying) operator would run them.
    pub async fn try_settle(&self, name: &str) -> bool {
        let key = Arc::new(self.get(name).await);
        let ok = reconcile(key, self.ctx.clone()).await.is_ok();
        self.ctx.publisher.flush().await;
        ok && !self.ctx.publisher.has_pending()
    }

    /// A new operator process: same API, clock and minter; nothing remembered.
    pub fn restart(&mut self) {
        *self.tap.budget.lock().unwrap() = None;
        let publisher =
            Arc::new(Publisher::new(self.client.clone(), self.ctx.clock.clone(), Duration::from_millis(10)));
        self.ctx = Arc::new(Context::with(
            self.client.clone(),
            self.ctx.settings.clone(),
            publisher,
            self.ctx.clock.clone(),
            self.ctx.mint.clone(),
        ));
    }

    /// Reconcile and then let the publisher write everything requested.
    pub async fn settle(&self, name: &str) -> kube::runtime::controller::Action {
        let action = self.reconcile(name).await;
        self.ctx.publisher.flush().await;
        action
    }

    /// Reconcile until the key is Ready: its hash is published (seen on the
    /// next look, a publish poll later) and has had the propagation delay.
    pub async fn settle_ready(&self, name: &str) -> kube::runtime::controller::Action {
        self.settle(name).await;
        self.advance(self.ctx.settings.publish_poll);
        self.settle(name).await;
        self.advance(self.ctx.settings.propagation_delay);
        self.settle(name).await
    }

    pub fn advance(&self, d: SignedDuration) {
        let mut now = self.clock.lock().unwrap();
        *now = now.checked_add(d).unwrap();
    }

    pub fn write_count(&self) -> usize {
        self.tap.writes.lock().unwrap().len()
    }

    pub fn inject(&self, target: &'static str, conflict: bool) {
        self.tap.faults.lock().unwrap().push(Fault { target, conflict });
    }

    pub async fn secret(&self, name: &str) -> Option<Secret> {
        Api::<Secret>::namespaced(self.client.clone(), NS).get_opt(name).await.unwrap()
    }

    pub async fn secret_token(&self, name: &str, data_key: &str) -> Option<String> {
        let secret = self.secret(name).await?;
        let value = secret.data?.get(data_key)?.clone();
        Some(String::from_utf8(value.0).unwrap())
    }

    pub async fn published(&self, key_set: &str) -> Vec<Record> {
        published_records(&self.client, key_set).await
    }

    pub async fn events(&self) -> Vec<K8sEvent> {
        Api::<K8sEvent>::namespaced(self.client.clone(), NS).list(&ListParams::default()).await.unwrap().items
    }

    pub async fn event_reasons(&self) -> Vec<String> {
        self.events().await.into_iter().filter_map(|e| e.reason).collect()
    }

    pub async fn patch_spec(&self, name: &str, spec: Value) {
        self.keys().patch(name, &PatchParams::default(), &Patch::Merge(json!({ "spec": spec }))).await.unwrap();
    }
}

pub fn hash_of(token: &str) -> KeyHash {
    Token::parse(token).expect("Secret holds a well-formed token").hash()
}

pub struct LogWriter(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every record in the stored shards of `key_set` in [`NS`], plain or gzip.
pub async fn published_records(client: &Client, key_set: &str) -> Vec<Record> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let list = cms.list(&ListParams::default().labels(&format!("keyward.dev/keyset={key_set}"))).await.unwrap();
    list.items
        .iter()
        .flat_map(|cm| {
            let text = cm.data.clone().unwrap_or_default().into_values().map(String::into_bytes);
            text.chain(cm.binary_data.clone().unwrap_or_default().into_values().map(|b| b.0)).collect::<Vec<_>>()
        })
        .flat_map(|bytes| decode_shard(&bytes).expect("published shards decode").records)
        .collect()
}
