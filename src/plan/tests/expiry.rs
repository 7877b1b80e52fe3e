//! Expiry: looked at exactly at `expiresAt`, final, and optionally deleted after retention.

use crate::api::KeyState;
use crate::plan::Publish;

use jiff::SignedDuration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::fixtures::{T0, World, an_api_key, at, mins, ready_reason};

#[test]
fn a_key_requeues_exactly_at_its_expiry() {
    let mut world = World::converged(an_api_key("crm").expiring_at("2026-01-10T00:00:00Z").build(), T0);
    world.settings.expiry_notices.clear();
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

fn unused_for(d: &str) -> crate::api::ApiKey {
    let mut key = an_api_key("crm").build();
    key.spec.expire_after_unused = Some(d.to_owned());
    key
}

#[test]
fn a_key_never_used_expires_exactly_expire_after_unused_after_it_became_ready_with_reason_unused() {
    let mut world = World::converged(unused_for("30d"), T0);
    world.settings.expiry_notices.clear();
    let ready_since = super::fixtures::ready_since(&world);
    let deadline = ready_since + SignedDuration::from_hours(30 * 24);
    assert_eq!(world.plan().requeue_at, Some(deadline));

    world.now = deadline - SignedDuration::from_secs(1);
    world.reconcile();
    assert_eq!(world.status().state, Some(KeyState::Active), "one second before its deadline");

    world.now = deadline;
    let plan = world.reconcile();
    assert_eq!(world.status().state, Some(KeyState::Expired));
    assert_eq!(world.status().expired_at.as_ref().map(|t| t.0), Some(deadline));
    assert_eq!(ready_reason(&world).1, "Unused");
    assert!(plan.records.is_empty(), "withdrawn from the key set: {:?}", plan.records);
    assert_eq!(world.secret_tokens, (None, None));
}

#[test]
fn a_key_used_before_its_deadline_is_no_longer_expiring() {
    let mut world = World::converged(unused_for("30d"), T0);
    world.settings.expiry_notices.clear();
    // A verifier reported a use on day 20 (the operator's usage pass wrote lastUsedAt).
    let used = at("2026-01-21T00:00:00Z");
    world.key.status.as_mut().unwrap().last_used_at = Some(Time(used));
    world.now = at("2026-01-31T00:00:00Z");
    let plan = world.reconcile();
    assert_eq!(world.status().state, Some(KeyState::Active));
    assert_eq!(plan.requeue_at, Some(used + SignedDuration::from_hours(30 * 24)));
    assert!(!plan.records.is_empty(), "still published");
}

#[test]
fn an_unused_key_keeps_its_reason_and_is_deleted_after_its_retention() {
    let mut key = unused_for("1d");
    key.spec.retain_expired_for = Some("7d".to_owned());
    let mut world = World::converged(key, T0);
    let deadline = super::fixtures::ready_since(&world) + SignedDuration::from_hours(24);
    world.now = deadline;
    let expired = world.reconcile();
    assert_eq!(expired.requeue_at, Some(deadline + SignedDuration::from_hours(7 * 24)));
    world.after(mins(1));
    assert_eq!(ready_reason(&world).1, "Unused", "the cause stays on later passes");
    world.now = deadline + SignedDuration::from_hours(7 * 24);
    world.reconcile();
    assert!(world.deleted);
}

#[test]
fn expires_at_before_the_unused_deadline_expires_the_key_with_reason_expired() {
    let mut key = unused_for("30d");
    key.spec.expires_at = Some(Time(at("2026-01-10T00:00:00Z")));
    let mut world = World::converged(key, T0);
    world.settings.expiry_notices.clear();
    assert_eq!(world.plan().requeue_at, Some(at("2026-01-10T00:00:00Z")));
    world.now = at("2026-01-10T00:00:00Z");
    world.reconcile();
    assert_eq!(ready_reason(&world).1, "Expired");
}

fn notices(world: &World) -> usize {
    world.event_reasons().iter().filter(|r| **r == "ExpiringSoon").count()
}

fn expiring_soon(world: &World) -> Option<(String, String)> {
    world.status().conditions.iter().find(|c| c.type_ == "ExpiringSoon").map(|c| (c.status.clone(), c.reason.clone()))
}

#[test]
fn a_notice_is_sent_once_at_each_notice_point_also_across_restarts() {
    let mut world = World::converged(an_api_key("crm").expiring_at("2026-02-01T00:00:00Z").build(), T0);
    assert_eq!(notices(&world), 0);
    assert_eq!(expiring_soon(&world), None, "no condition before the first notice point");
    assert_eq!(world.plan().requeue_at, Some(at("2026-01-17T00:00:00Z")), "15 days before");

    world.now = at("2026-01-17T00:00:00Z");
    world.reconcile();
    assert_eq!(notices(&world), 1);
    assert_eq!(expiring_soon(&world).map(|c| c.0), Some("True".to_owned()));
    let plan = world.after(mins(10));
    assert_eq!(notices(&world), 1, "not again at the same point");
    assert_eq!(plan.requeue_at, Some(at("2026-01-25T00:00:00Z")), "the 7-day point is next");
    world.restart();
    world.after(mins(10));
    assert_eq!(notices(&world), 1, "not again after an operator restart (status remembers)");
    assert_eq!(world.status().expiry_notice.as_ref().map(|n| n.before.as_str()), Some("15d"));

    world.now = at("2026-01-25T00:00:00Z");
    world.reconcile();
    world.now = at("2026-01-31T00:00:00Z");
    world.reconcile();
    assert_eq!(notices(&world), 3, "15, 7 and 1 day before");
    let warning = world.plans.iter().flat_map(|p| &p.events).find(|e| e.reason.as_str() == "ExpiringSoon").unwrap();
    assert_eq!(warning.kind, crate::plan::EventKind::Warning);
    assert!(warning.note.contains("2026-02-01T00:00:00Z") && warning.note.contains("ExpiresAt"), "{}", warning.note);
}

#[test]
fn a_key_used_after_a_notice_is_no_longer_expiring_soon_and_does_not_expire() {
    let mut world = World::converged(unused_for("30d"), T0);
    let deadline = super::fixtures::ready_since(&world) + SignedDuration::from_hours(30 * 24);
    world.now = deadline - SignedDuration::from_hours(24);
    world.reconcile();
    assert_eq!(notices(&world), 1, "a late first look sends only the most urgent notice");
    assert_eq!(world.status().expiry_notice.as_ref().map(|n| n.before.as_str()), Some("1d"));

    world.key.status.as_mut().unwrap().last_used_at = Some(Time(world.now));
    world.reconcile();
    assert_eq!(expiring_soon(&world).map(|c| c.1), Some("NotExpiringSoon".to_owned()));
    world.now = deadline;
    world.reconcile();
    assert_eq!(world.status().state, Some(KeyState::Active), "used before its deadline: not expired");
}
