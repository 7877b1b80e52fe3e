//! A Secret changed behind the operator's back: repaired, never published from, reported.

use crate::api::KeyState;
use crate::plan::{EventKind, Reason, SecretView, Slot, Source};

use super::fixtures::{T0, World, an_api_key, later, mins, ready_reason, slot, stranger_token, swap};

#[test]
fn a_deleted_secret_is_repaired_with_a_new_token_and_the_old_one_gets_a_grace_period() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    let old = world.current_token().clone();
    world.observed.secret = SecretView::Absent;
    world.secret_tokens = (None, None);

    world.after(mins(1));

    assert_eq!(world.mints, 2);
    let records =
        crate::plan::records_for(&world.key, &world.observed.class, world.settings.default_grace_period, world.now);
    assert_eq!(records.len(), 2, "new token plus the old one in its grace period");
    let old_record = records.iter().find(|r| r.hash == old.hash()).unwrap();
    assert_eq!(old_record.not_after, Some(later(&world, jiff::SignedDuration::from_hours(1))));
    assert!(world.event_reasons().contains(&"SecretRepaired"));
    let warning = world.plans.iter().flat_map(|p| &p.events).find(|e| e.reason == Reason::SecretRepaired).unwrap();
    assert_eq!(warning.kind, EventKind::Warning);
    assert!(warning.note.contains("deleted"), "{}", warning.note);
}

#[test]
fn a_token_edited_by_hand_is_never_published() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    let planted = stranger_token();
    world.secret_facts_mut().token = slot(Some(&planted));
    world.secret_tokens.0 = Some(planted.clone());

    world.after(mins(1));

    assert!(!world.published_hashes().contains(&planted.hash()));
    assert_ne!(world.current_token(), &planted);
}

#[test]
fn foreign_data_keys_in_the_secret_are_removed() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    world.secret_facts_mut().foreign_keys = vec!["extra".to_owned()];
    let plan = world.plan();
    assert_eq!(plan.secret.as_ref().map(|s| s.token), Some(Some(Source::Token)));
}

#[test]
fn a_secret_owned_by_someone_else_is_left_alone_and_reported() {
    let mut world = World::new(an_api_key("crm").build(), T0);
    world.observed.secret = SecretView::Present(Box::default());

    let plan = world.step();

    assert!(plan.secret.is_none() && plan.mint.is_none());
    assert_eq!(ready_reason(&world), ("False".to_owned(), "SecretConflict".to_owned()));
    assert_eq!(world.status().state, Some(KeyState::Error));
    assert!(plan.requeue_at.is_some_and(|t| t > world.now), "no hot loop");
}

#[test]
fn a_malformed_token_slot_counts_as_tampering() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    world.secret_facts_mut().token = Slot::Malformed;
    world.secret_tokens.0 = None;
    world.after(mins(1));
    assert_eq!(world.mints, 2);
    assert!(world.event_reasons().contains(&"SecretRepaired"));
}

#[test]
fn a_token_whose_validity_ended_is_never_given_a_grace_period() {
    // A status edited by hand: the current token already ended, and the Secret lost it.
    let mut world = World::converged(an_api_key("crm").build(), T0);
    let first = world.current_token().clone();
    let ended = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(world.now);
    world.key.status.as_mut().unwrap().current_key.as_mut().unwrap().not_after = Some(ended);
    world.observed.secret = SecretView::Absent;
    world.secret_tokens = (None, None);

    world.after(mins(1));

    assert!(!world.published_hashes().contains(&first.hash()), "{:#?}", world.status());
    assert!(world.status().previous_key.is_none(), "{:?}", world.status().previous_key);
}

#[test]
fn a_repaired_secret_is_not_ready_until_the_new_token_is_published() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    world.observed.secret = SecretView::Absent;
    world.secret_tokens = (None, None);

    world.after(mins(1));

    assert_eq!(ready_reason(&world), ("False".to_owned(), "Publishing".to_owned()));
}

#[test]
fn a_repair_during_a_grace_period_says_that_the_older_previous_token_stops_working() {
    let mut world = World::converged(an_api_key("crm").rotating_every("30d").with_grace("2h").build(), T0);
    let first = world.current_token().clone();
    let started = world.after(jiff::SignedDuration::from_hours(24 * 30));
    swap(&mut world, &started);
    let second = world.current_token().clone();
    world.observed.secret = SecretView::Absent;
    world.secret_tokens = (None, None);

    world.after(mins(1));

    let published = world.published_hashes();
    assert!(published.contains(&second.hash()), "the token taken from the Secret keeps its grace");
    assert!(!published.contains(&first.hash()), "one previous slot");
    let warning =
        world.plans.iter().rev().flat_map(|p| &p.events).find(|e| e.reason == Reason::SecretRepaired).unwrap();
    let first_id = first.hash().key_id().to_string();
    assert!(warning.note.contains(&first_id) && warning.note.contains("stops working now"), "{}", warning.note);
}

#[test]
fn a_template_label_removed_from_the_spec_makes_the_plan_apply_the_secret_again() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    assert!(world.plan().secret.is_none(), "a converged key writes nothing");
    // The Secret still carries a label the operator applied earlier and no longer sends:
    // only a new server-side apply removes it.
    world.secret_facts_mut().labels.insert("tier".to_owned(), "gold".to_owned());
    world.secret_facts_mut().applied_labels.insert("tier".to_owned());
    let plan = world.plan();
    let desired = plan.secret.as_ref().expect("the Secret is applied again");
    assert!(!desired.labels.contains_key("tier"), "{:?}", desired.labels);
}

#[test]
fn a_label_someone_else_added_to_the_secret_is_left_alone() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    world.secret_facts_mut().labels.insert("backup".to_owned(), "nightly".to_owned());
    assert!(world.plan().secret.is_none(), "labels the operator does not own cause no write");
}
