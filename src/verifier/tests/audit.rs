//! The audit log's pure parts: redaction, request ids, and the line written for an event.

use std::fmt::Write as _;

use http::HeaderMap;

use super::fixtures::*;
use crate::verifier::audit::{AuditLog, SECRET_RUN, redact};

#[test]
fn runs_of_token_length_are_redacted_plainly_or_percent_encoded_and_shorter_ones_stay() {
    let secret = token(1).expose().to_owned();
    let tail = secret.rsplit_once('_').unwrap().1.to_owned();
    let just_short = "a".repeat(SECRET_RUN - 1);
    let encoded = tail.bytes().fold(String::new(), |mut out, b| {
        let _ = write!(out, "%{b:02x}");
        out
    });
    let cases = [
        (format!("/leads/{secret}"), "/leads/kw_[redacted]".to_owned()),
        (format!("/a/{tail}/b/{tail}"), "/a/[redacted]/b/[redacted]".to_owned()),
        (format!("/a/{encoded}"), "/a/[redacted]".to_owned()),
        (format!("x={}", "b".repeat(SECRET_RUN)), "x=[redacted]".to_owned()),
        // Shorter runs stay: ids, UUIDs, nginx's 32-hex $request_id.
        (format!("/x/{just_short}"), format!("/x/{just_short}")),
        ("/x/0f8fad5b-d9cb-469f-a165-70867728950e".to_owned(), "/x/0f8fad5b-d9cb-469f-a165-70867728950e".to_owned()),
        ("9f86d081884c7d659a2feaa0c55ad015".to_owned(), "9f86d081884c7d659a2feaa0c55ad015".to_owned()),
        // A percent sign that encodes no letter or digit ends a run; broken escapes are left alone.
        (format!("{just_short}%2F{just_short}%4"), format!("{just_short}%2F{just_short}%4")),
        // Not ASCII around a run: cut at character boundaries.
        (format!("é{tail}ü"), "é[redacted]ü".to_owned()),
        (String::new(), String::new()),
    ];
    for (input, expected) in cases {
        assert_eq!(redact(&input), expected, "{input}");
    }
}

#[test]
fn only_a_single_well_formed_request_id_is_taken() {
    let id = |values: &[&str]| {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-request-id", v.parse().unwrap());
        }
        AuditLog::request_id(&headers)
    };
    assert_eq!(id(&["0f8fad5b-d9cb-469f-a165-70867728950e"]).as_deref(), Some("0f8fad5b-d9cb-469f-a165-70867728950e"));
    assert_eq!(id(&["trace:1.2_3"]).as_deref(), Some("trace:1.2_3"));
    assert_eq!(id(&[&"a".repeat(128)]).map(|s| s.len()), Some(128));
    for bad in ["", "a b", "a\"b", "a\\b", "ä", "a,b", "a/b", &"a".repeat(129)] {
        let mut headers = HeaderMap::new();
        if let Ok(value) = http::HeaderValue::from_str(bad) {
            headers.insert("x-request-id", value);
        }
        assert_eq!(AuditLog::request_id(&headers), None, "{bad:?}");
    }
    assert_eq!(id(&["one", "two"]), None, "two ids are no id");
    assert_eq!(id(&[]), None);
}
