//! `spec.secretName` or `spec.keySet` changed: the token follows, the old Secret and key set are let go.

use crate::api::KeyState;
use crate::plan::{Reason, SecretView};

use super::fixtures::{T0, World, an_api_key, ready_reason};

#[test]
fn changing_the_secret_name_issues_a_token_in_the_new_secret() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    world.key.spec.secret_name = Some("crm-token".to_owned());
    world.observed.secret = SecretView::Absent;
    world.secret_tokens = (None, None);

    let first = world.step();

    assert!(first.events.iter().any(|e| e.note.contains("secretName")), "{:?}", first.events);
    assert_eq!(first.status.as_ref().and_then(|s| s.state), Some(KeyState::Pending));
    world.reconcile();
    assert_eq!(world.status().secret_name.as_deref(), Some("crm-token"));
    assert_eq!(world.mints, 2);
}

#[test]
fn changing_the_secret_name_keeps_the_old_secret_until_the_previous_token_retires() {
    let mut world = World::converged(an_api_key("crm").with_grace("2h").rotating_every("30d").build(), T0);
    world.key.spec.secret_name = Some("crm-token".to_owned());
    world.observed.secret = SecretView::Absent;
    world.secret_tokens = (None, None);

    let first = world.step();
    assert_eq!(first.delete_secret, None, "the old Secret still holds the token in its grace period");
    world.reconcile();
    assert_eq!(world.status().previous_secret_name.as_deref(), Some("crm-apikey"));
    let grace_end = world.status().previous_key.as_ref().and_then(|k| k.not_after.as_ref()).map(|t| t.0).unwrap();

    world.now = grace_end;
    let retired = world.reconcile();

    let deleting: Vec<_> = world.plans.iter().filter_map(|p| p.delete_secret.clone()).collect();
    assert_eq!(deleting, vec!["crm-apikey".to_owned()], "deleted once, when the grace period ended");
    assert_eq!(world.status().previous_secret_name, None);
    assert_eq!(retired.delete_secret.as_deref(), Some("crm-apikey"), "deleted by the pass that retires the token");
}

#[test]
fn moving_to_another_key_set_leaves_the_old_one_at_once() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    assert_eq!(world.status().key_set.as_deref(), Some("default"));
    world.key.spec.key_set = "partners".to_owned();

    let plan = world.plan();

    assert_eq!(plan.leave_key_set.as_deref(), Some("default"));
    assert_eq!(plan.status.as_ref().and_then(|s| s.key_set.as_deref()), Some("partners"));
    assert!(plan.mint.is_none(), "moving does not rotate");
    assert!(plan.events.iter().any(|e| e.reason == Reason::KeySetChanged));
    let status = plan.status.as_ref().unwrap();
    assert_eq!(status.conditions[0].reason, "Publishing", "verifiers of the new set have not seen the hash yet");
}

#[test]
fn moving_a_held_key_to_another_key_set_records_it_and_leaves_the_old_set() {
    let mut world = World::new(an_api_key("crm").build(), T0);
    world.reconcile();
    world.key.spec.key_set = "partners".to_owned();

    let moved = world.step();

    assert_eq!(moved.status.as_ref().and_then(|s| s.key_set.as_deref()), Some("default"), "recorded where adopted");
    assert!(moved.status.as_ref().is_some_and(|s| s.current_key.is_some()));
    let left = world.step();
    assert_eq!(left.leave_key_set.as_deref(), Some("default"), "then left as any recorded key");
    assert_eq!(world.status().key_set.as_deref(), Some("partners"));
    assert_eq!(ready_reason(&world), ("False".to_owned(), "Publishing".to_owned()));
    assert_eq!(world.mints, 1, "moving does not rotate");
}

#[test]
fn renaming_the_secret_of_a_held_key_records_it_and_repairs_as_for_any_recorded_key() {
    let mut world = World::new(an_api_key("crm").build(), T0);
    world.reconcile();
    let first = world.current_token().clone();
    world.key.spec.secret_name = Some("crm-token".to_owned());
    world.observed.secret = SecretView::Absent;
    world.secret_tokens = (None, None);

    world.after(jiff::SignedDuration::from_secs(5));

    assert_eq!(world.status().previous_secret_name.as_deref(), Some("crm-apikey"));
    assert_eq!(world.status().previous_key.as_ref().map(|k| k.key_id.clone()), Some(first.hash().key_id().to_string()));
    assert_eq!(world.mints, 2);
    assert!(world.event_reasons().contains(&"SecretRepaired"), "{:?}", world.event_reasons());
}
