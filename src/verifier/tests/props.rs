//! Property tests: no input makes path handling or the decision panic, and no made-up header is ever allowed.

use proptest::prelude::*;

use super::fixtures::*;
use crate::verifier::decision::{Outcome, Request, decide};
use crate::verifier::index::KeyIndex;
use crate::verifier::routes::{Routes, canonical_path};

fn any_uri() -> impl Strategy<Value = String> {
    prop_oneof![
        "[/a-z.%2eEfF5cC?#\\\\]{0,40}",
        any::<String>(),
        prop::collection::vec(
            prop_oneof![
                "[a-z]{1,5}",
                Just(".".to_owned()),
                Just("..".to_owned()),
                Just("%2e%2E".to_owned()),
                Just(String::new())
            ],
            0..6
        )
        .prop_map(|segments| format!("/{}", segments.join("/"))),
    ]
}

proptest! {
    #[test]
    fn canonical_paths_are_stable_and_free_of_dot_and_empty_segments(uri in any_uri()) {
        if let Ok(path) = canonical_path(&uri) {
            prop_assert!(path.starts_with('/'));
            let segments: Vec<&str> = path[1..].split('/').collect();
            let last = segments.len() - 1;
            for (i, segment) in segments.iter().enumerate() {
                prop_assert!(*segment != "." && *segment != "..", "{path}");
                prop_assert!(!segment.is_empty() || i == last, "{path}");
            }
            let again = canonical_path(&path).map(std::borrow::Cow::into_owned);
            prop_assert_eq!(again, Ok(path.clone().into_owned()), "not idempotent");
        }
    }

    #[test]
    fn made_up_requests_never_panic_and_are_never_allowed(
        method in "[A-Za-z]{0,8}",
        uri in any_uri(),
        headers in prop::collection::vec(prop_oneof![
            prop::collection::vec(any::<u8>(), 0..100),
            "(Bearer|bearer|Basic) {0,2}kw_[0-9A-Za-z]{30,45}".prop_map(String::into_bytes),
        ], 0..3),
    ) {
        let known = token(1);
        let index = KeyIndex::build(vec![key_set("default", 1, vec![record(&known, &["*:admin"])])], None).unwrap();
        let request = Request { method: &method, uri: &uri, authorization: headers.iter().map(Vec::as_slice) };
        let decision = decide(&index, &Routes::default(), request, now());
        prop_assert_ne!(decision.outcome, Outcome::Allowed);
    }
}
