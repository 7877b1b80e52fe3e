//! What `kubectl keyward check` finds for a hash, and that it never needs the token to say so.

use jiff::Timestamp;

use crate::keyset::{Record, RecordState};
use crate::plugin::check::{Owners, Slot, describe, in_status};
use crate::token::KeyHash;

use super::cluster::agency;
use super::fixtures::{INVALID, ROTATED, key, now};

/// ApiKeys only, as when the ClusterApiKeys could not be read.
fn owners(keys: &[crate::api::ApiKey]) -> Owners<'_> {
    Owners { keys, cluster_keys: None }
}

fn hash(hex: &str) -> KeyHash {
    format!("sha256:{hex}").parse().unwrap()
}

const CURRENT: &str = "1111aaaa2222bbbb3333cccc4444dddd5555eeee6666ffff7777000088889999";
const PREVIOUS: &str = "9999ffff8888eeee7777dddd6666cccc5555bbbb4444aaaa3333222211110000";
const UNKNOWN: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[test]
fn the_current_and_previous_tokens_are_found_in_status() {
    let keys = [key(INVALID), key(ROTATED)];
    let (found, slot, version) = in_status(&keys, &hash(CURRENT)).expect("found");
    assert_eq!((found.metadata.name.as_deref(), slot), (Some("crm"), Slot::Current));
    assert_eq!(version.key_id, "1111aaaa2222");
    let (_, slot, _) = in_status(&keys, &hash(PREVIOUS)).expect("found");
    assert_eq!(slot, Slot::Previous);
    assert!(in_status(&keys, &hash(UNKNOWN)).is_none());
}

#[test]
fn the_answer_names_the_key_its_window_and_whether_it_is_published() {
    let keys = [key(ROTATED)];
    let record = Record {
        hash: hash(PREVIOUS),
        key_id: hash(PREVIOUS).key_id(),
        namespace: "team-a".into(),
        name: "crm".into(),
        scopes: vec!["orders:read".parse().unwrap()],
        not_before: "2026-11-01T11:30:00Z".parse::<Timestamp>().unwrap(),
        not_after: Some("2026-12-01T12:30:00Z".parse().unwrap()),
        state: RecordState::Active,
        rate_limit: None,
    };
    let published = [("default".to_owned(), record)];
    let (text, found) = describe(owners(&keys), Some(&published), &hash(PREVIOUS), "in namespace team-a", now());
    assert!(found);
    assert!(
        text.starts_with("This token belongs to apikey.keyward.dev/crm in namespace team-a: its previous token"),
        "{text}"
    );
    assert!(text.contains("Valid to:   2026-12-01T12:30:00Z (in 30m)"), "{text}");
    assert!(text.contains("Published:  key set default, active"), "{text}");

    let (text, found) = describe(owners(&keys), Some(&[]), &hash(CURRENT), "in namespace team-a", now());
    assert!(found && text.contains("Published:  no (verifiers refuse it)"), "{text}");
}

#[test]
fn an_unknown_token_is_reported_by_key_id_and_not_found() {
    let (text, found) = describe(owners(&[key(ROTATED)]), None, &hash(UNKNOWN), "in namespace team-a", now());
    assert!(!found);
    assert_eq!(text, "No ApiKey in namespace team-a has this token (key id 000000000000).\n");
}

#[test]
fn a_cluster_keys_token_is_found_in_the_cluster_keys_status_and_named_as_one() {
    let cluster = [agency()];
    let owners = Owners { keys: &[], cluster_keys: Some(&cluster) };
    let record = Record {
        hash: hash(CURRENT),
        key_id: hash(CURRENT).key_id(),
        namespace: "cluster".into(),
        name: "agency".into(),
        scopes: vec!["contacts:read".parse().unwrap()],
        not_before: "2026-12-01T11:30:00Z".parse::<Timestamp>().unwrap(),
        not_after: None,
        state: RecordState::Active,
        rate_limit: None,
    };
    let published = [("default".to_owned(), record)];
    let (text, found) = describe(owners, Some(&published), &hash(CURRENT), "in namespace loc-a", now());
    assert!(found);
    assert!(
        text.starts_with(
            "This token belongs to clusterapikey.keyward.dev/agency (cluster-wide, Secret in namespace platform): \
             its current token"
        ),
        "{text}"
    );
    assert!(text.contains("State:      Active") && text.contains("Published:  key set default, active"), "{text}");
    // An ApiKey naming the same token comes first: the namespace's own key is the likelier owner.
    let keys = [key(ROTATED)];
    let (text, _) = describe(Owners { keys: &keys, cluster_keys: Some(&cluster) }, None, &hash(CURRENT), "", now());
    assert!(text.starts_with("This token belongs to apikey.keyward.dev/crm in namespace team-a"), "{text}");
}

#[test]
fn an_unknown_token_says_whether_cluster_keys_were_looked_at() {
    let cluster = [agency()];
    let owners = Owners { keys: &[], cluster_keys: Some(&cluster) };
    let (text, found) = describe(owners, None, &hash(UNKNOWN), "in namespace loc-a", now());
    assert!(!found);
    assert_eq!(text, "No ApiKey in namespace loc-a and no ClusterApiKey has this token (key id 000000000000).\n");
}
