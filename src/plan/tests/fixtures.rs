//! Test fixtures that read like prose, and a pure simulation of the controller carrying out plans.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rand::SeedableRng;

use crate::api::{ApiKey, ApiKeySpec, ROTATE_ANNOTATION, RotationSpec};
use crate::token::{Prefix, Token};

use crate::plan::{
    DesiredSecret, FINALIZER, Finalizer, Held, LABEL_APIKEY, LABEL_MANAGED_BY, MANAGED_BY, Observed, Plan, SecretFacts,
    SecretView, Settings, Slot, Source, TokenFacts, plan,
};
use crate::token::KeyHash;

/// The default grace period of [`Settings`], for validating specs as the operator does.
pub const DEFAULT_GRACE: SignedDuration = SignedDuration::from_hours(1);

pub const T0: &str = "2026-01-01T00:00:00Z";

pub fn at(text: &str) -> Timestamp {
    text.parse().expect("test timestamps are valid")
}

pub fn mins(n: i64) -> SignedDuration {
    SignedDuration::from_mins(n)
}

/// An ApiKey as a user would write it, built up clause by clause.
pub struct KeyBuilder(ApiKey);

/// `an_api_key("crm")`: namespace `team-a`, scope `orders:read`, finalizer already added.
pub fn an_api_key(name: &str) -> KeyBuilder {
    let spec: ApiKeySpec = serde_yaml::from_str("scopes: [\"orders:read\"]").expect("minimal spec parses");
    let mut key = ApiKey::new(name, spec);
    key.metadata.namespace = Some("team-a".to_owned());
    key.metadata.uid = Some(format!("uid-{name}"));
    key.metadata.generation = Some(1);
    key.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    KeyBuilder(key)
}

impl KeyBuilder {
    pub fn from_yaml(yaml: &str) -> KeyBuilder {
        let mut builder = an_api_key("from-yaml");
        builder.0.spec = serde_yaml::from_str(yaml).expect("test YAML parses");
        builder
    }
    pub fn rotating_every(mut self, every: &str) -> Self {
        self.0.spec.rotation = Some(RotationSpec { every: Some(every.to_owned()), ..RotationSpec::default() });
        self
    }
    pub fn rotating_on(mut self, schedule: &str) -> Self {
        self.0.spec.rotation = Some(RotationSpec { schedule: Some(schedule.to_owned()), ..RotationSpec::default() });
        self
    }
    pub fn with_grace(mut self, grace: &str) -> Self {
        self.0.spec.rotation.get_or_insert_with(RotationSpec::default).grace_period = Some(grace.to_owned());
        self
    }
    pub fn expiring_at(mut self, t: &str) -> Self {
        self.0.spec.expires_at = Some(Time(at(t)));
        self
    }
    pub fn retained_after_expiry_for(mut self, d: &str) -> Self {
        self.0.spec.retain_expired_for = Some(d.to_owned());
        self
    }
    pub fn without_finalizer(mut self) -> Self {
        self.0.metadata.finalizers = None;
        self
    }
    pub fn build(self) -> ApiKey {
        self.0
    }
}

/// A controller simulation: carries out plans the way the real one does,
/// minting with a seeded RNG and publishing instantly.
pub struct World {
    pub key: ApiKey,
    pub observed: Observed,
    pub settings: Settings,
    pub now: Timestamp,
    /// Tokens in the Secret: (token, next-token).
    pub secret_tokens: (Option<Token>, Option<Token>),
    pub mints: usize,
    /// Hashes of every token minted, in order.
    pub minted: Vec<crate::token::KeyHash>,
    pub plans: Vec<Plan>,
    /// Whether the simulated publisher writes the key set.
    pub publisher_up: bool,
    /// What the simulated publisher holds in memory for the key (lost by [`World::restart`]).
    pub held: Option<Held>,
    /// Since when each hash in the key set as written has been in it without a break.
    pub published_since: BTreeMap<KeyHash, Timestamp>,
    pub deleted: bool,
    rng: rand::rngs::StdRng,
}

impl World {
    pub fn new(key: ApiKey, now: &str) -> World {
        World {
            key,
            observed: Observed::default(),
            settings: Settings::default(),
            now: at(now),
            secret_tokens: (None, None),
            mints: 0,
            minted: Vec::new(),
            plans: Vec::new(),
            publisher_up: true,
            held: None,
            published_since: BTreeMap::new(),
            deleted: false,
            rng: rand::rngs::StdRng::seed_from_u64(7),
        }
    }

    /// A key that has been created at `now` and converged: its token is
    /// published and has had the propagation delay, so it is Ready (the clock
    /// is then a little after `now`).
    pub fn converged(key: ApiKey, now: &str) -> World {
        let mut world = World::new(key, now);
        let mut plan = world.reconcile();
        for _ in 0..4 {
            let pending = world.key.status.as_ref().is_none_or(|s| s.state == Some(crate::api::KeyState::Pending));
            match plan.requeue_at {
                Some(t) if pending => {
                    world.now = t;
                    plan = world.reconcile();
                }
                _ => break,
            }
        }
        world
    }

    pub fn plan(&self) -> Plan {
        plan(&self.key, &self.observed, &self.settings, self.now)
    }

    /// Plan and carry out one pass.
    pub fn step(&mut self) -> Plan {
        let plan = self.plan();
        self.apply(&plan, usize::MAX);
        self.plans.push(plan.clone());
        plan
    }

    /// Carry out at most `writes` of the plan's writes, in the controller's
    /// order (finalizer, hold, Secret, status), as a crash after that many
    /// would. The publisher may rebuild at any moment once the plan's token is
    /// held: it does so at once, and again at the end.
    pub fn apply(&mut self, plan: &Plan, writes: usize) -> usize {
        let mut done = 0;
        if plan.finalizer == Finalizer::Add {
            if done == writes {
                return done;
            }
            self.key.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
            done += 1;
        }
        self.hold(plan.hold.as_ref());
        if self.publisher_up {
            self.publish();
        }
        if let Some(secret) = &plan.secret {
            if done == writes {
                return done;
            }
            self.write_secret(secret, plan.mint.is_some());
            done += 1;
        }
        if let Some(status) = &plan.status {
            if done == writes {
                return done;
            }
            self.key.status = Some(status.clone());
            done += 1;
        }
        if plan.delete_apikey {
            self.deleted = true;
        }
        if self.publisher_up {
            self.publish();
        }
        done
    }

    /// The operator process dies and a new one starts: what the publisher held in memory is lost.
    pub fn restart(&mut self) {
        self.held = None;
        self.observed.held = None;
    }

    /// The publisher's `hold`: keeps `publishedAt` for the same token, and
    /// counts a hash already in the key set as published from now.
    fn hold(&mut self, held: Option<&Held>) {
        let previous = self.held.take();
        self.held = held.map(|h| {
            let mut h = h.clone();
            let same = previous.as_ref().filter(|p| {
                p.version.hash == h.version.hash && p.key_set == h.key_set && p.secret_name == h.secret_name
            });
            h.version.published_at = if let Some(p) = same {
                p.version.published_at.clone()
            } else {
                let already = h.hash().is_some_and(|hash| self.observed.published.iter().any(|r| r.hash == hash));
                already.then_some(Time(self.now))
            };
            h
        });
        self.observed.held = self.held.clone();
    }

    /// What the key set would hold if the publisher rebuilt it now.
    pub fn publishable(&self) -> Vec<crate::keyset::Record> {
        crate::plan::records_with(
            &self.key,
            self.held.as_ref(),
            &self.observed.class,
            self.settings.default_grace_period,
            self.now,
        )
    }

    /// A publisher rebuild: write the key's records, note when a held hash was
    /// first written, forget a held token once status names a current one.
    fn publish(&mut self) {
        let records = self.publishable();
        self.published_since.retain(|hash, _| records.iter().any(|r| r.hash == *hash));
        for r in &records {
            self.published_since.entry(r.hash).or_insert(self.now);
        }
        if self.key.status.as_ref().is_some_and(|s| s.current_key.is_some()) {
            self.held = None;
        }
        if let Some(held) = &mut self.held {
            if held.hash().is_some_and(|hash| records.iter().any(|r| r.hash == hash)) {
                held.version.published_at.get_or_insert(Time(self.now));
            } else {
                held.version.published_at = None;
            }
        }
        self.observed.published = records;
        self.observed.held = self.held.clone();
    }

    /// Reconcile until the plan no longer asks to go again right away.
    pub fn reconcile(&mut self) -> Plan {
        for _ in 0..8 {
            let plan = self.step();
            if plan.requeue_at.is_none_or(|t| t > self.now) {
                return plan;
            }
        }
        panic!("plan did not settle in 8 passes: {:#?}", self.plans.last());
    }

    /// Move the clock and reconcile.
    pub fn after(&mut self, d: SignedDuration) -> Plan {
        self.now = self.now.checked_add(d).expect("test times are in range");
        self.reconcile()
    }

    /// Move the clock to the plan's requested deadline and reconcile.
    pub fn at_deadline(&mut self, plan: &Plan) -> Plan {
        self.now = plan.requeue_at.expect("the plan asked for a requeue");
        self.reconcile()
    }

    fn write_secret(&mut self, secret: &DesiredSecret, mint: bool) {
        let minted = mint.then(|| {
            self.mints += 1;
            let prefix: Prefix = self.key.spec.prefix.as_deref().unwrap_or("kw").parse().expect("valid prefix");
            let token = Token::generate(&prefix, &mut self.rng);
            self.minted.push(token.hash());
            token
        });
        let resolve = |source: Option<Source>| match source? {
            Source::Token => self.secret_tokens.0.clone(),
            Source::NextToken => self.secret_tokens.1.clone(),
            Source::Minted => minted.clone(),
        };
        self.secret_tokens = (resolve(secret.token), resolve(secret.next_token));
        self.observed.secret = SecretView::Present(Box::new(SecretFacts {
            owned: true,
            labels: secret.labels.clone(),
            annotations: secret.annotations.clone(),
            // The operator's server-side apply owns every label and annotation it sent.
            applied_labels: secret.labels.keys().cloned().collect(),
            applied_annotations: secret.annotations.keys().cloned().collect(),
            foreign_keys: Vec::new(),
            token: slot(self.secret_tokens.0.as_ref()),
            next_token: slot(self.secret_tokens.1.as_ref()),
        }));
    }

    pub fn set_annotation(&mut self, value: &str) {
        self.key
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(ROTATE_ANNOTATION.to_owned(), value.to_owned());
    }

    pub fn status(&self) -> &crate::api::ApiKeyStatus {
        self.key.status.as_ref().expect("the key has a status")
    }

    pub fn current_token(&self) -> &Token {
        self.secret_tokens.0.as_ref().expect("the Secret holds a token")
    }

    pub fn published_hashes(&self) -> Vec<crate::token::KeyHash> {
        self.publishable().iter().map(|r| r.hash).collect()
    }

    pub fn secret_facts_mut(&mut self) -> &mut SecretFacts {
        match &mut self.observed.secret {
            SecretView::Present(facts) => facts,
            SecretView::Absent => panic!("the Secret is absent"),
        }
    }

    pub fn event_reasons(&self) -> Vec<&'static str> {
        self.plans.iter().flat_map(|p| p.events.iter().map(|e| e.reason.as_str())).collect()
    }
}

pub fn slot(token: Option<&Token>) -> Slot {
    token.map_or(Slot::Empty, |t| {
        Slot::Token(TokenFacts { hash: t.hash(), prefix: t.prefix().to_owned(), display_prefix: t.display_prefix() })
    })
}

pub fn managed_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()), (LABEL_APIKEY.to_owned(), name.to_owned())])
}

// ---- steps and readings shared by the topic files ----

/// From a rotation's start, look again until the next hash is seen published,
/// then wait the propagation delay: the swap. Returns the swapping plan.
pub fn swap(world: &mut World, started: &Plan) -> Plan {
    let seen = world.at_deadline(started);
    assert!(world.status().next_key.as_ref().is_some_and(|k| k.published_at.is_some()), "{:#?}", world.status());
    world.at_deadline(&seen)
}

pub fn later(world: &World, d: SignedDuration) -> Timestamp {
    world.now.checked_add(d).expect("test times are in range")
}

/// When the key last became Ready (its Ready=True condition's transition).
pub fn ready_since(world: &World) -> Timestamp {
    crate::plan::unused::unused_since(world.key.status.as_ref()).expect("the key is Ready")
}

pub fn ready_reason(world: &World) -> (String, String) {
    let c = &world.status().conditions[0];
    (c.status.clone(), c.reason.clone())
}

pub fn writes(plan: &Plan) -> usize {
    usize::from(plan.finalizer == Finalizer::Add)
        + usize::from(plan.secret.is_some())
        + usize::from(plan.status.is_some())
}

pub fn stranger_token() -> Token {
    Token::generate(&Prefix::default(), &mut rand::rngs::StdRng::seed_from_u64(99))
}
