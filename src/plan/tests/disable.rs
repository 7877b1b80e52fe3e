//! Disabling and enabling: the same token, published as inactive and back.

use crate::api::KeyState;
use crate::keyset::RecordState;
use crate::plan::{Publish, Reason};

use super::fixtures::{T0, World, an_api_key, mins, ready_reason};

#[test]
fn disabling_keeps_the_token_and_publishes_it_as_inactive_at_once() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    let token = world.current_token().clone();
    world.key.spec.active = false;

    let plan = world.after(mins(1));

    assert_eq!(plan.publish, Publish::Now);
    assert_eq!(plan.records[0].state, RecordState::Inactive);
    assert_eq!(world.current_token(), &token);
    assert_eq!(world.status().state, Some(KeyState::Inactive));
    assert_eq!(ready_reason(&world), ("False".to_owned(), "Disabled".to_owned()));
    assert!(plan.events.iter().any(|e| e.reason == Reason::Disabled));
}

#[test]
fn enabling_again_restores_the_same_token() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    let token = world.current_token().clone();
    world.key.spec.active = false;
    world.after(mins(1));
    world.key.spec.active = true;

    let plan = world.after(mins(1));

    assert_eq!(world.current_token(), &token);
    assert_eq!(plan.records[0].state, RecordState::Active);
    assert!(plan.events.iter().any(|e| e.reason == Reason::Enabled));
    assert_eq!(world.mints, 1);
}

#[test]
fn disabling_a_key_whose_token_is_held_records_it_at_once() {
    let mut world = World::new(an_api_key("crm").build(), T0);
    world.reconcile();
    world.key.spec.active = false;

    let plan = world.after(jiff::SignedDuration::from_secs(5));

    assert_eq!(world.status().state, Some(KeyState::Inactive));
    assert_eq!(plan.publish, Publish::Now);
    assert_eq!(plan.records[0].state, RecordState::Inactive);
    assert_eq!(world.event_reasons(), vec!["Created"], "one Created, no Disabled for a key that never worked");
    assert_eq!(world.mints, 1);
}
