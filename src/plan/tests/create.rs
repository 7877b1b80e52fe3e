//! A new key: minted into the Secret, held by the publisher until Ready, one status write; crashes on the way.

use crate::api::KeyState;
use crate::plan::{Finalizer, Plan, Publish, Source};

use super::fixtures::{T0, World, an_api_key, at, later, managed_labels, mins, ready_reason};

// ---- a new key, step by step: mint, hold, publish, Ready ----

/// A new key after its first plan: the mint.
fn minted() -> (World, Plan) {
    let mut world = World::new(an_api_key("crm").build(), T0);
    let first = world.step();
    (world, first)
}

/// The plan that finds the minted token in the Secret.
fn adopted() -> (World, Plan) {
    let (mut world, _) = minted();
    let adopted = world.step();
    (world, adopted)
}

/// The plan that sees the held token published.
fn seen_published() -> (World, Plan) {
    let (mut world, adopted) = adopted();
    let seen = world.at_deadline(&adopted);
    (world, seen)
}

/// The plan at the end of the propagation delay.
fn made_ready() -> (World, Plan) {
    let (mut world, seen) = seen_published();
    let ready = world.at_deadline(&seen);
    (world, ready)
}

#[test]
fn a_new_key_first_mints_its_token_into_its_own_labelled_secret() {
    let (_, first) = minted();
    assert!(first.mint.is_some(), "a new key mints: {first:#?}");
    let secret = first.secret.as_ref().expect("the token is persisted in the Secret first");
    assert_eq!(secret.token, Some(Source::Minted));
    assert_eq!(secret.name, "crm-apikey");
    assert_eq!(secret.labels, managed_labels("crm"));
}

#[test]
fn nothing_is_recorded_or_held_before_the_secret_has_the_token() {
    let (_, first) = minted();
    assert!(first.status.is_none(), "status waits until the token is in the Secret: {:?}", first.status);
    assert!(first.hold.is_none(), "nothing to hold before the Secret has it");
}

#[test]
fn the_minting_plan_plans_again_at_once() {
    let (_, first) = minted();
    assert_eq!(first.requeue_at, Some(at(T0)), "plans again at once");
}

#[test]
fn adopting_the_minted_token_mints_nothing_and_writes_no_status() {
    let (world, adopted) = adopted();
    assert!(adopted.mint.is_none() && adopted.secret.is_none(), "adopting mints nothing: {adopted:#?}");
    assert_eq!(adopted.status, None, "no status write while the token waits to be Ready");
    assert!(world.key.status.is_none(), "{:?}", world.key.status);
}

#[test]
fn the_adopted_token_is_held_and_published_before_status_names_it() {
    let (world, adopted) = adopted();
    let hold = adopted.hold.as_ref().expect("the publisher is handed the token");
    assert_eq!(hold.hash(), Some(world.current_token().hash()));
    assert_eq!(hold.version.not_before.0, at(T0));
    assert_eq!(adopted.publish, Publish::Soon);
    assert_eq!(world.published_hashes(), vec![world.current_token().hash()], "published before status names it");
}

#[test]
fn while_the_token_is_held_the_plan_looks_for_its_publication() {
    let (world, adopted) = adopted();
    assert_eq!(adopted.requeue_at, Some(later(&world, world.settings.publish_poll)), "looks for the publication");
}

#[test]
fn a_published_token_waits_the_propagation_delay_without_a_status_write() {
    let (world, seen) = seen_published();
    assert_eq!(seen.status, None, "published, not yet Ready: still no status write");
    let published_at = world.held.as_ref().and_then(|h| h.version.published_at.as_ref()).map(|t| t.0);
    assert_eq!(published_at, Some(at(T0)), "the publisher wrote it when it was handed over");
    assert_eq!(seen.requeue_at, Some(at(T0).checked_add(world.settings.propagation_delay).unwrap()));
}

#[test]
fn at_ready_status_records_the_current_token_as_published() {
    let (world, ready) = made_ready();
    let status = ready.status.as_ref().expect("the one status write");
    let current = status.current_key.as_ref().expect("current key recorded");
    assert_eq!(current.key_id, world.current_token().hash().key_id().to_string());
    assert_eq!(current.published_at.as_ref().map(|t| t.0), Some(at(T0)));
    assert_eq!(current.not_before.0, at(T0), "valid from its adoption, as published");
    assert_eq!(status.prefix.as_deref(), Some(world.current_token().display_prefix().as_str()));
}

#[test]
fn at_ready_a_new_key_is_active() {
    let (world, ready) = made_ready();
    assert_eq!(ready.status.as_ref().expect("the one status write").state, Some(KeyState::Active));
    assert_eq!(ready_reason(&world), ("True".to_owned(), "Active".to_owned()));
}

#[test]
fn the_token_stays_held_while_the_status_write_is_on_its_way() {
    let (_, ready) = made_ready();
    assert!(ready.hold.is_some(), "still held while the status write is on its way");
    assert_eq!(ready.publish, Publish::Unchanged, "status names what is published already");
}

#[test]
fn a_new_key_costs_one_mint_one_status_write_and_one_event() {
    let (world, _) = made_ready();
    let statuses = world.plans.iter().filter(|p| p.status.is_some()).count();
    assert_eq!(statuses, 1, "one status write for a new key");
    assert_eq!(world.published_hashes(), vec![world.current_token().hash()]);
    assert_eq!(world.mints, 1);
    assert_eq!(world.event_reasons(), vec!["Created"]);
}

#[test]
fn once_status_names_the_token_nothing_is_held_or_written() {
    let (world, _) = made_ready();
    let converged = world.plan();
    assert!(converged.hold.is_none() && converged.status.is_none(), "status is the record now: {converged:#?}");
}

// ---- the held token when something else happens first; crashes ----

#[test]
fn a_held_token_not_published_within_a_minute_is_recorded_as_publishing() {
    let mut world = World::new(an_api_key("crm").build(), T0);
    world.publisher_up = false;
    world.reconcile();
    assert!(world.key.status.is_none());

    world.after(mins(1));

    let status = world.status();
    assert!(status.current_key.as_ref().is_some_and(|k| k.published_at.is_none()), "{status:#?}");
    assert_eq!(ready_reason(&world), ("False".to_owned(), "Publishing".to_owned()));
    assert_eq!(status.state, Some(KeyState::Pending));
    world.publisher_up = true;
    let plan = world.after(jiff::SignedDuration::from_secs(5)); // published now
    let seen = world.at_deadline(&plan); // seen now
    assert_eq!(ready_reason(&world), ("False".to_owned(), "Publishing".to_owned()));
    world.at_deadline(&seen);
    assert_eq!(ready_reason(&world), ("True".to_owned(), "Active".to_owned()), "then the recorded path as before");
    assert_eq!(world.mints, 1);
}

#[test]
fn a_crash_while_the_token_is_held_adopts_it_again_and_counts_its_publication_from_the_restart() {
    let mut world = World::new(an_api_key("crm").build(), T0);
    world.reconcile();
    world.after(jiff::SignedDuration::from_secs(90)); // published at T0, Ready due at T0 + 2m
    world.restart();

    let restarted = world.after(jiff::SignedDuration::from_secs(60));
    let seen_at = world.now;

    assert!(world.key.status.is_none(), "not Ready at T0 + 2m: the new process saw the hash only now");
    let held = world.held.as_ref().expect("held again");
    assert_eq!(held.version.published_at.as_ref().map(|t| t.0), Some(seen_at), "never earlier than the truth");
    let seen = world.at_deadline(&restarted);
    assert_eq!(seen.requeue_at, Some(seen_at.checked_add(world.settings.propagation_delay).unwrap()));
    world.at_deadline(&seen);
    assert_eq!(ready_reason(&world), ("True".to_owned(), "Active".to_owned()));
    assert_eq!(world.mints, 1, "the Secret's token is adopted, not replaced");
    assert_eq!(world.published_hashes(), vec![world.current_token().hash()]);
}

#[test]
fn reapplying_unchanged_yaml_plans_no_write_at_all() {
    let world = World::converged(an_api_key("crm").rotating_every("30d").build(), T0);

    let again = world.plan();

    assert_eq!(again.mint, None);
    assert_eq!(again.secret, None);
    assert_eq!(again.status, None);
    assert_eq!(again.publish, Publish::Unchanged);
    assert!(again.events.is_empty(), "{:?}", again.events);
    assert_eq!(again.finalizer, Finalizer::Keep);
}

#[test]
fn a_key_without_the_finalizer_gets_it_before_anything_is_published() {
    let world = World::new(an_api_key("crm").without_finalizer().build(), T0);
    assert_eq!(world.plan().finalizer, Finalizer::Add);
}

#[test]
fn crash_after_the_secret_write_adopts_the_token_instead_of_minting_again() {
    let mut world = World::new(an_api_key("crm").build(), T0);
    let first = world.plan();
    world.apply(&first, 1); // the Secret is written, then the operator dies

    world.now = at("2026-01-01T00:05:00Z");
    world.reconcile();

    assert_eq!(world.mints, 1, "restart must not mint again");
    assert_eq!(world.published_hashes(), vec![world.current_token().hash()]);
}
