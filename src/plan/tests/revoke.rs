//! Revocation: unpublished at once, token removed, and final whatever the spec says later.

use crate::api::KeyState;
use crate::plan::{Publish, Reason};

use super::fixtures::{T0, World, an_api_key, mins};

#[test]
fn revoking_unpublishes_every_hash_at_once_and_removes_the_token_from_the_secret() {
    let mut world = World::converged(an_api_key("crm").rotating_every("30d").build(), T0);
    world.after(jiff::SignedDuration::from_hours(24 * 30)); // mid-rotation: two hashes published
    world.key.spec.revoked = true;

    let plan = world.after(mins(1));

    assert_eq!(plan.publish, Publish::Now);
    assert!(plan.records.is_empty());
    assert_eq!(plan.secret.as_ref().map(|s| (s.token, s.next_token)), Some((None, None)));
    assert_eq!(world.secret_tokens, (None, None));
    assert_eq!(world.status().state, Some(KeyState::Revoked));
    assert!(world.status().current_key.as_ref().and_then(|k| k.not_after.as_ref()).is_some(), "audit record");
    assert!(plan.events.iter().any(|e| e.reason == Reason::Revoked));
    assert!(plan.events.iter().any(|e| e.reason == Reason::CleanedUp));
    assert_eq!(plan.requeue_at, None);
    let later = world.plan();
    assert!(later.secret.is_none() && later.status.is_none() && later.events.is_empty(), "{later:#?}");
}

#[test]
fn revoking_or_deleting_a_key_whose_token_is_held_withdraws_it_at_once() {
    for deleting in [false, true] {
        let mut world = World::new(an_api_key("crm").build(), T0);
        world.reconcile();
        assert_eq!(world.published_hashes().len(), 1);
        if deleting {
            world.key.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(world.now));
        } else {
            world.key.spec.revoked = true;
        }

        let plan = world.plan();

        assert_eq!(plan.hold, None, "deleting {deleting}: the publisher lets the token go");
        assert_eq!(plan.publish, Publish::Now, "deleting {deleting}: before any other write");
        assert!(plan.records.is_empty(), "deleting {deleting}: {:?}", plan.records);
        world.apply(&plan, usize::MAX);
        assert!(world.published_hashes().is_empty(), "deleting {deleting}");
    }
}

#[test]
fn clearing_revoked_after_revocation_never_publishes_the_key_again() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    let first = world.current_token().clone();
    world.key.spec.revoked = true;
    world.after(mins(1));
    let revoked_at = world.status().revoked_at.clone().expect("revocation recorded in status");
    world.key.spec.revoked = false; // admission bypassed

    let plan = world.after(mins(1));

    assert!(plan.records.is_empty() && world.published_hashes().is_empty(), "{:?}", plan.records);
    assert!(!world.published_hashes().contains(&first.hash()), "revoked token published again");
    assert!(plan.mint.is_none(), "no new token for a revoked key");
    assert_eq!(world.status().state, Some(KeyState::Revoked));
    assert_eq!(world.status().revoked_at, Some(revoked_at));
    assert!(world.status().conditions[0].message.contains("does not undo"), "{:?}", world.status().conditions[0]);
}

#[test]
fn a_revocation_recorded_before_revoked_at_existed_is_final_too() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    let first = world.current_token().clone();
    world.key.spec.revoked = true;
    world.after(mins(1));
    world.key.status.as_mut().unwrap().revoked_at = None; // as an older operator wrote it
    world.key.spec.revoked = false;

    let plan = world.after(mins(1));

    assert!(plan.records.is_empty() && plan.mint.is_none(), "{plan:#?}");
    assert!(!world.published_hashes().contains(&first.hash()));
    assert_eq!(world.status().state, Some(KeyState::Revoked));
    assert!(world.status().revoked_at.is_some(), "recorded now");
}
