//! Deleting an ApiKey: unpublish first, then release the finalizer.

use crate::plan::{Finalizer, Publish};

use super::fixtures::{T0, World, an_api_key};

#[test]
fn a_deleted_key_unpublishes_then_releases_its_finalizer() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    world.key.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(world.now));

    let plan = world.plan();

    assert_eq!(plan.finalizer, Finalizer::Remove);
    assert!(plan.records.is_empty());
    assert_eq!(plan.publish, Publish::Now);
    assert!(plan.status.is_none() && plan.secret.is_none());
}
