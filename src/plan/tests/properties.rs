//! Property tests: any sequence of user actions, clock jumps, crashes and tampering keeps the key set safe.

use std::collections::BTreeSet;

use jiff::SignedDuration;
use proptest::prelude::*;

use crate::api::KeyState;
use crate::keyset::RecordState;
use crate::plan::SecretView;

use super::fixtures::{T0, World, an_api_key};

#[derive(Debug, Clone)]
enum Step {
    /// Let this many minutes pass, reconciling at every deadline on the way.
    Wait(u32),
    ToggleActive,
    RequestRotation(u8),
    TogglePrefix,
    DeleteSecret,
    /// `spec.revoked` flipped, as an object that bypassed admission may be.
    ToggleRevoked,
    /// The operator dies after this many writes of its next plan, then restarts.
    Crash(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u32..3_000).prop_map(Step::Wait),
        1 => Just(Step::ToggleActive),
        1 => (0u8..3).prop_map(Step::RequestRotation),
        1 => Just(Step::TogglePrefix),
        1 => Just(Step::DeleteSecret),
        1 => Just(Step::ToggleRevoked),
        2 => (0usize..3).prop_map(Step::Crash),
    ]
}

fn wait(world: &mut World, minutes: u32) {
    let target = world.now.checked_add(SignedDuration::from_mins(i64::from(minutes))).unwrap();
    loop {
        let plan = world.reconcile();
        match plan.requeue_at {
            Some(t) if t > world.now && t <= target => world.now = t,
            _ => break,
        }
    }
    world.now = target;
    world.reconcile();
}

fn check(world: &World) -> Result<(), TestCaseError> {
    let records = world.publishable();
    let hashes: BTreeSet<_> = records.iter().map(|r| r.hash).collect();
    prop_assert_eq!(hashes.len(), records.len(), "no hash is published twice");
    prop_assert!(records.len() <= 3, "at most previous, current and next: {}", records.len());
    for r in &records {
        prop_assert!(world.minted.contains(&r.hash), "only tokens the operator minted are published");
        prop_assert!(r.not_after.is_none_or(|end| end > world.now), "nothing past its end is published");
        if !world.key.spec.active {
            prop_assert_eq!(r.state, RecordState::Inactive);
        }
    }
    let empty = crate::api::ApiKeyStatus::default();
    let status = world.key.status.as_ref().unwrap_or(&empty);
    if status.conditions.first().is_some_and(|c| c.status == "True") {
        let published_at = status.current_key.as_ref().and_then(|k| k.published_at.as_ref()).map(|t| t.0);
        let delay = world.settings.propagation_delay;
        prop_assert!(
            published_at.is_some_and(|t| t.checked_add(delay).unwrap() <= world.now),
            "Ready only once the current hash has had the propagation delay: {:?}",
            published_at
        );
        let current = status.current_key.as_ref().and_then(|k| k.hash.as_deref()).and_then(|h| h.parse().ok());
        let since = current.and_then(|h| world.published_since.get(&h)).copied();
        prop_assert!(
            since.is_some_and(|since| published_at.is_some_and(|p| since <= p)),
            "publishedAt is never earlier than the hash entered the key set: {:?} vs {:?}",
            published_at,
            since
        );
    }
    if let Some(held) = world.held.as_ref().filter(|_| status_current_missing(world)) {
        let token = world.secret_tokens.0.as_ref().map(crate::token::Token::hash);
        prop_assert_eq!(held.hash(), token, "a held token is the one in the Secret");
        prop_assert!(status.conditions.first().is_none_or(|c| c.status != "True"), "held means not Ready yet");
    }
    if status.revoked_at.is_some() {
        prop_assert!(records.is_empty(), "a revoked key is never published again: {:?}", records);
        prop_assert_eq!(status.state, Some(KeyState::Revoked));
    }
    if matches!(status.state, Some(KeyState::Active | KeyState::Rotating)) {
        let token = world.secret_tokens.0.as_ref().expect("a live key has a token in its Secret");
        prop_assert!(hashes.contains(&token.hash()), "the Secret's token is published");
        let current = status.current_key.as_ref().expect("a live key has a current key");
        prop_assert_eq!(&current.key_id, &token.hash().key_id().to_string());
    }
    if let Some(next) = &status.next_key {
        let token = world.secret_tokens.1.as_ref().expect("a rotation in progress keeps its next token in the Secret");
        prop_assert_eq!(&next.key_id, &token.hash().key_id().to_string());
    }
    Ok(())
}

fn status_current_missing(world: &World) -> bool {
    world.key.status.as_ref().is_none_or(|s| s.current_key.is_none())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn any_history_keeps_the_published_set_consistent_with_the_secret(
        steps in proptest::collection::vec(step(), 1..25),
        from_creation in any::<bool>(),
    ) {
        let key = an_api_key("crm").rotating_every("1d").with_grace("1h").build();
        // From creation, the first steps fall into the held token's wait for Ready.
        let mut world = if from_creation {
            let mut world = World::new(key, T0);
            world.reconcile();
            world
        } else {
            World::converged(key, T0)
        };
        check(&world)?;
        for step in steps {
            match step {
                Step::Wait(minutes) => wait(&mut world, minutes),
                Step::ToggleActive => {
                    world.key.spec.active = !world.key.spec.active;
                    world.reconcile();
                }
                Step::RequestRotation(v) => {
                    world.set_annotation(&format!("request-{v}"));
                    world.reconcile();
                }
                Step::TogglePrefix => {
                    let next = if world.key.spec.prefix.is_some() { None } else { Some("acme".to_owned()) };
                    world.key.spec.prefix = next;
                    world.reconcile();
                }
                Step::ToggleRevoked => {
                    world.key.spec.revoked = !world.key.spec.revoked;
                    world.reconcile();
                }
                Step::DeleteSecret => {
                    world.observed.secret = SecretView::Absent;
                    world.secret_tokens = (None, None);
                    world.reconcile();
                }
                Step::Crash(writes) => {
                    let plan = world.plan();
                    world.apply(&plan, writes);
                    world.restart();
                    world.reconcile();
                }
            }
            check(&world)?;
        }
    }
}
