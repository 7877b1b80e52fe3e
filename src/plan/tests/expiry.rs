//! Expiry: looked at exactly at `expiresAt`, final, and optionally deleted after retention.

use crate::api::KeyState;
use crate::plan::Publish;

use super::fixtures::{T0, World, an_api_key, at, mins};

#[test]
fn a_key_requeues_exactly_at_its_expiry() {
    let world = World::converged(an_api_key("crm").expiring_at("2026-01-10T00:00:00Z").build(), T0);
    assert_eq!(world.plan().requeue_at, Some(at("2026-01-10T00:00:00Z")));
    assert_eq!(world.plan().records[0].not_after, Some(at("2026-01-10T00:00:00Z")));
}

#[test]
fn at_expiry_the_key_is_marked_expired_and_its_token_cleaned_up() {
    let mut world = World::converged(an_api_key("crm").expiring_at("2026-01-10T00:00:00Z").build(), T0);
    world.now = at("2026-01-10T00:00:00Z");

    let plan = world.reconcile();

    assert_eq!(world.status().state, Some(KeyState::Expired));
    assert_eq!(world.status().expired_at.as_ref().map(|t| t.0), Some(at("2026-01-10T00:00:00Z")));
    assert_eq!(world.secret_tokens, (None, None));
    assert!(plan.records.is_empty());
    assert_eq!(plan.requeue_at, None, "nothing left to do without retention");
    assert!(!world.deleted);
}

#[test]
fn an_expired_key_is_deleted_after_its_retention() {
    let key = an_api_key("crm").expiring_at("2026-01-10T00:00:00Z").retained_after_expiry_for("7d").build();
    let mut world = World::converged(key, T0);
    world.now = at("2026-01-10T00:00:00Z");
    let expired = world.reconcile();
    assert_eq!(expired.requeue_at, Some(at("2026-01-17T00:00:00Z")));

    world.at_deadline(&expired);

    assert!(world.deleted);
}

#[test]
fn moving_expires_at_into_the_future_after_expiry_does_not_revive_the_key() {
    let mut world = World::converged(an_api_key("crm").expiring_at("2026-01-10T00:00:00Z").build(), T0);
    world.now = at("2026-01-10T00:00:00Z");
    world.reconcile();
    world.key.spec.expires_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at("2027-01-01T00:00:00Z")));

    let plan = world.after(mins(1));

    assert!(plan.mint.is_none() && plan.records.is_empty());
    assert_eq!(world.status().state, Some(KeyState::Expired));
}

#[test]
fn a_key_that_expires_while_its_token_is_held_is_looked_at_at_expiry_and_withdrawn() {
    let mut world = World::new(an_api_key("crm").expiring_at("2026-01-01T00:01:00Z").build(), T0);
    let adopted = world.reconcile();
    let seen = world.at_deadline(&adopted);
    assert_eq!(seen.requeue_at, Some(at("2026-01-01T00:01:00Z")), "expiry comes before Ready");

    let expired = world.at_deadline(&seen);

    assert_eq!(world.status().state, Some(KeyState::Expired));
    assert_eq!(expired.hold, None);
    assert_eq!(expired.publish, Publish::Now);
    assert!(world.published_hashes().is_empty());
    assert_eq!(world.secret_tokens, (None, None));
}
