//! What `kubectl keyward status` shows.

use crate::plugin::status::{EventLine, Events, not_ready, relative, render};

use super::fixtures::{INVALID, ROTATED, key, now};

fn shown(yaml: &str, events: &Events) -> String {
    render(&key(yaml), events, now())
}

#[test]
fn a_rotated_key_shows_both_key_ids_with_their_windows_and_the_next_rotation() {
    let text = shown(ROTATED, &Events::Listed(Vec::new()));
    for wanted in [
        "Name:          team-a/crm\n",
        "Display name:  CRM Integration\n",
        "State:         Rotating\n",
        "Current key:   1111aaaa2222  from 2026-12-01T11:30:00Z (30m ago), no end\n",
        "Previous key:  9999ffff8888  from 2026-11-01T11:30:00Z (30d ago), until 2026-12-01T12:30:00Z (in 30m)\n",
        "Next rotation: 2026-12-31T11:30:00Z (in 29d)\n",
        "Last used:     not reported\n",
        "Secret:        crm-apikey\n",
    ] {
        assert!(text.contains(wanted), "missing {wanted:?} in:\n{text}");
    }
    assert!(!text.contains("Not Ready"), "a Ready, settled key has no Not Ready line:\n{text}");
    assert!(!text.contains("sha256:"), "status shows key ids, not hashes:\n{text}");
}

#[test]
fn an_invalid_key_says_why_it_is_not_ready() {
    let text = shown(INVALID, &Events::Listed(Vec::new()));
    assert!(text.contains("Not Ready: InvalidSpec: spec.rotation.schedule: not a cron expression"), "{text}");
    assert!(text.contains("Current key:   none"), "{text}");
}

#[test]
fn a_key_without_status_points_at_the_operator() {
    let bare = key(
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: new, namespace: a}\nspec: {scopes: [x:read]}\n",
    );
    let why = not_ready(&bare).expect("not ready");
    assert!(why.contains("operator has not reported"), "{why}");
}

#[test]
fn a_status_behind_the_spec_says_the_operator_has_not_caught_up() {
    let mut behind = key(ROTATED);
    behind.metadata.generation = Some(3);
    let why = not_ready(&behind).expect("not settled");
    assert!(why.contains("generation 2") && why.contains("generation 3"), "{why}");
}

#[test]
fn usage_is_shown_when_status_has_it() {
    let mut used = key(ROTATED);
    let status = used.status.as_mut().unwrap();
    let counts = |allowed, denied| crate::api::RequestCounts { allowed, denied };
    status.usage = Some(crate::api::Usage {
        last24h: counts(5, 0),
        last7d: counts(40, 1),
        last30d: counts(100, 3),
        updated_at: None,
    });
    let text = render(&used, &Events::Listed(Vec::new()), now());
    assert!(text.contains("Requests:      5 in 24h, 40 in 7d, 100 in 30d (denied: 0, 1, 3)"), "{text}");
}

#[test]
fn the_most_recent_events_are_shown_oldest_first_and_a_refusal_is_named() {
    let lines: Vec<EventLine> = (0..12)
        .map(|i| EventLine {
            time: Some(now() - jiff::SignedDuration::from_mins(60 - i)),
            type_: "Normal".into(),
            reason: format!("Step{i}"),
            message: format!("note {i}"),
        })
        .collect();
    let text = shown(ROTATED, &Events::Listed(lines));
    assert!(!text.contains("Step1 "), "only the last ten:\n{text}");
    let (a, b) = (text.find("Step2").unwrap(), text.find("Step11").unwrap());
    assert!(a < b, "oldest first:\n{text}");
    assert!(text.contains("49m ago   Normal   Step11"), "{text}");

    let refused = shown(ROTATED, &Events::Unavailable("forbidden: you may not list events".into()));
    assert!(refused.contains("(not shown: forbidden: you may not list events)"), "{refused}");
}

#[test]
fn relative_times_read_like_kubectl_ages() {
    let at = |s: i64| now() + jiff::SignedDuration::from_secs(s);
    assert_eq!(relative(at(-45), now()), "45s ago");
    assert_eq!(relative(at(0), now()), "now");
    assert_eq!(relative(at(600), now()), "in 10m");
    assert_eq!(relative(at(3 * 3600), now()), "in 3h");
    assert_eq!(relative(at(-90 * 86_400), now()), "90d ago");
}
