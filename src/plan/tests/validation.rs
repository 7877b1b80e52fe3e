//! Invalid specs: named by field, reported once, unpublished, waiting for a change.

use crate::api::KeyState;
use crate::plan::{Publish, plan, validate};

use super::fixtures::{DEFAULT_GRACE, KeyBuilder, T0, World, an_api_key, at};

#[test]
fn invalid_specs_name_the_field_and_wait_for_a_change() {
    let cases: &[(&str, &str)] = &[
        ("scopes: []", "spec.scopes"),
        ("scopes: [\"orders:delete\"]", "spec.scopes[0]"),
        ("scopes: [\"orders:read\", \"orders:read\"]", "spec.scopes[1]"),
        ("scopes: [\"a:read\"]\nprefix: \"Bad-Prefix\"", "spec.prefix"),
        ("scopes: [\"a:read\"]\nsecretName: \"Not_A_Name\"", "spec.secretName"),
        ("scopes: [\"a:read\"]\nkeySet: \"UPPER\"", "spec.keySet"),
        ("scopes: [\"a:read\"]\nrotation: {every: \"30 days\"}", "spec.rotation.every"),
        ("scopes: [\"a:read\"]\nrotation: {schedule: \"61 * * * *\"}", "spec.rotation.schedule"),
        ("scopes: [\"a:read\"]\nrotation: {schedule: \"0 0 3 * * 1\"}", "spec.rotation.schedule"),
        ("scopes: [\"a:read\"]\nrotation: {every: \"1h\", gracePeriod: \"2h\"}", "spec.rotation.gracePeriod"),
        ("scopes: [\"a:read\"]\nrotation: {gracePeriod: \"2h\"}", "spec.rotation"),
        ("scopes: [\"a:read\"]\nrotation: {every: \"1d\", schedule: \"0 3 * * 1\"}", "spec.rotation"),
        ("scopes: [\"a:read\"]\nrateLimit: {requests: 0, period: \"1m\"}", "spec.rateLimit"),
        ("scopes: [\"a:read\"]\nrateLimit: {requests: 5, period: \"soon\"}", "spec.rateLimit.period"),
        ("scopes: [\"a:read\"]\nretainExpiredFor: \"forever\"", "spec.retainExpiredFor"),
        ("scopes: [\"a:read\"]\nexpireAfterUnused: \"1y\"", "spec.expireAfterUnused"),
        ("scopes: [\"a:read\"]\nsecretTemplate: {labels: {keyward.dev/x: y}}", "spec.secretTemplate.labels"),
        (
            "scopes: [\"a:read\"]\nsecretTemplate: {annotations: {app.kubernetes.io/managed-by: me}}",
            "spec.secretTemplate.annotations",
        ),
        ("scopes: [\"a:read\"]\nexpiryNotices: [\"7d\", \"0d\"]", "spec.expiryNotices[1]"),
        ("scopes: [\"a:read\"]\nexpiryNotices: [\"7d\", \"a week\"]", "spec.expiryNotices[1]"),
        ("scopes: [\"a:read\"]\nexpiryNotices: [\"7d\", \"1d\", \"7d\"]", "spec.expiryNotices[2]"),
        ("scopes: [\"a:read\"]\nexpiryNotices: [1d, 2d, 3d, 4d, 5d, 6d, 7d, 8d, 9d, 10d, 11d]", "spec.expiryNotices"),
        ("scopes: [\"a:read\"]\nrotation: {every: 0s}", "spec.rotation.every"),
        ("scopes: [\"a:read\"]\nrotation: {every: 1d, gracePeriod: 0m}", "spec.rotation.gracePeriod"),
    ];
    for (yaml, field) in cases {
        let key = KeyBuilder::from_yaml(yaml).build();
        let errors = validate(&key.spec, DEFAULT_GRACE).expect_err(yaml);
        assert!(errors.iter().any(|e| e.field == *field), "{yaml}: expected an error on {field}, got {errors:?}");

        let plan = plan(&key, &crate::plan::Observed::default(), &crate::plan::Settings::default(), at(T0));
        let status = plan.status.as_ref().expect("status reports the problem");
        assert_eq!(status.state, Some(KeyState::Error), "{yaml}");
        assert_eq!(status.conditions[0].reason, "InvalidSpec", "{yaml}");
        assert!(status.conditions[0].message.contains(field), "{yaml}: {}", status.conditions[0].message);
        assert!(plan.mint.is_none() && plan.secret.is_none(), "{yaml}: nothing is written");
        assert_eq!(plan.requeue_at, None, "{yaml}: no hot loop");
        assert_eq!(plan.events.len(), 1, "{yaml}");
    }
}

#[test]
fn an_invalid_spec_emits_its_event_once() {
    let mut world = World::new(KeyBuilder::from_yaml("scopes: []").build(), T0);
    world.step();
    let second = world.step();
    assert!(second.events.is_empty(), "{:?}", second.events);
    assert!(second.status.is_none());
}

#[test]
fn a_key_that_becomes_invalid_is_unpublished_at_once() {
    let mut world = World::converged(an_api_key("crm").build(), T0);
    world.key.spec.scopes = vec!["orders:fly".to_owned()];
    let plan = world.plan();
    assert_eq!(plan.publish, Publish::Now);
    assert!(plan.records.is_empty());
}

#[test]
fn valid_specs_from_the_docs_pass_validation() {
    for yaml in [
        "scopes: [\"orders:read\", \"orders:write\"]",
        "scopes: [\"*:admin\"]\nprefix: acme_live\nrotation: {every: 30d, gracePeriod: 1h}",
        "scopes: [\"a:read\"]\nrotation: {schedule: \"0 3 * * 1\"}\nrateLimit: {requests: 100, period: 1m, burst: 20}",
        "scopes: [\"a:read\"]\nexpiresAt: \"2027-01-01T00:00:00Z\"\nretainExpiredFor: 30d\nsecretName: crm.token",
        "scopes: [\"a:read\"]\nexpireAfterUnused: 90d\nexpiryNotices: [30d, 7d]",
        "scopes: [\"a:read\"]\nexpiresAt: \"2027-01-01T00:00:00Z\"\nexpiryNotices: []",
    ] {
        assert!(validate(&KeyBuilder::from_yaml(yaml).build().spec, DEFAULT_GRACE).is_ok(), "{yaml}");
    }
}

#[test]
fn grace_periods_must_be_shorter_than_any_interval_between_rotations() {
    let cases: &[(&str, bool)] = &[
        ("rotation: {every: 30m}", false),
        ("rotation: {every: 1h}", false),
        ("rotation: {every: 2h}", true),
        ("rotation: {every: 30m, gracePeriod: 10m}", true),
        ("rotation: {schedule: \"*/30 * * * *\"}", false),
        ("rotation: {schedule: \"*/30 * * * *\", gracePeriod: 20m}", true),
        ("rotation: {schedule: \"0 3,4 * * *\"}", false),
        ("rotation: {schedule: \"0 3 * * *\", gracePeriod: 1d}", false),
        ("rotation: {schedule: \"0 23 * * *\", gracePeriod: 23h}", true),
        ("rotation: {schedule: \"0 0 * * 1,2\", gracePeriod: 2d}", false),
        ("rotation: {schedule: \"0 0 * * 1\", gracePeriod: 2d}", true),
    ];
    for (rotation, valid) in cases {
        let yaml = format!("scopes: [\"a:read\"]\n{rotation}");
        let result = validate(&KeyBuilder::from_yaml(&yaml).build().spec, DEFAULT_GRACE);
        assert_eq!(result.is_ok(), *valid, "{rotation}: {result:?}");
        if let Err(errors) = result {
            assert!(errors.iter().any(|e| e.field == "spec.rotation.gracePeriod"), "{rotation}: {errors:?}");
        }
    }
}

#[test]
fn secret_template_keys_and_values_must_be_what_kubernetes_accepts() {
    let long = "a".repeat(64);
    let huge = "a".repeat(200 * 1024);
    let cases: Vec<(String, Option<&str>)> = vec![
        ("labels: {team: x, app.kubernetes.io/name: crm, empty: \"\"}".to_owned(), None),
        ("annotations: {example.com/note: \"any text, even spaces\"}".to_owned(), None),
        ("labels: {\"bad key\": x}".to_owned(), Some("spec.secretTemplate.labels[bad key]")),
        ("labels: {\"-x\": y}".to_owned(), Some("spec.secretTemplate.labels[-x]")),
        ("labels: {\"Example.com/x\": y}".to_owned(), Some("spec.secretTemplate.labels[Example.com/x]")),
        (format!("labels: {{{long}: y}}"), Some("spec.secretTemplate.labels")),
        ("labels: {team: \"two words\"}".to_owned(), Some("spec.secretTemplate.labels[team]")),
        (format!("labels: {{team: {long}}}"), Some("spec.secretTemplate.labels[team]")),
        ("annotations: {\"a/b/c\": x}".to_owned(), Some("spec.secretTemplate.annotations[a/b/c]")),
        (format!("annotations: {{a: {huge}, b: {huge}}}"), Some("spec.secretTemplate.annotations")),
    ];
    for (template, field) in cases {
        let yaml = format!("scopes: [\"a:read\"]\nsecretTemplate: {{{template}}}");
        let result = validate(&KeyBuilder::from_yaml(&yaml).build().spec, DEFAULT_GRACE);
        match field {
            None => assert!(result.is_ok(), "{template}: {result:?}"),
            Some(field) => {
                let errors = result.expect_err(&template);
                assert!(
                    errors.iter().any(|e| e.field.starts_with(field)),
                    "{template}: expected {field} in {errors:?}"
                );
            }
        }
    }
}

#[test]
fn a_stored_name_the_key_set_format_cannot_carry_is_reported_and_never_published() {
    // A real API server refuses such a name; one written around it must cost only itself.
    let key = an_api_key("Not_A_Name").build();

    let plan = plan(&key, &crate::plan::Observed::default(), &crate::plan::Settings::default(), at(T0));

    let status = plan.status.as_ref().expect("status reports the problem");
    assert_eq!((status.state, status.conditions[0].reason.as_str()), (Some(KeyState::Error), "InvalidSpec"));
    assert!(status.conditions[0].message.contains("metadata.name"), "{}", status.conditions[0].message);
    assert!(plan.mint.is_none() && plan.secret.is_none(), "nothing is written");
    assert_ne!(plan.publish, Publish::Now);
    assert!(
        crate::plan::records_with(&key, None, &crate::plan::class::ClassView::default(), DEFAULT_GRACE, at(T0))
            .iter()
            .all(|r| r.validate().is_err())
    );
}
