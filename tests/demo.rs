//! `keyward demo` end to end: the operator and the verifier on the in-memory
//! cluster, seeded with `examples/apikeys`, must pass every step; the dump must
//! hold every object, and no token may appear anywhere but in Secrets.

use std::path::Path;
use std::process::Command;

use k8s_openapi::api::core::v1::Secret;

fn token_shapes(text: &str) -> Vec<String> {
    let re = regex_lite::Regex::new(keyward::token::SCANNER_REGEX).unwrap();
    re.find_iter(text).map(|m| m.as_str().to_owned()).filter(|t| keyward::token::Token::parse(t).is_ok()).collect()
}

#[test]
fn the_demo_passes_every_step_and_its_dump_holds_tokens_only_in_secrets() {
    let dump = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["demo", "--dump", dump.path().to_str().unwrap()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the keyward binary runs");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    assert!(token_shapes(&stdout).is_empty() && token_shapes(&stderr).is_empty(), "the demo printed a token");
    assert_usage_and_notices_shown(&stdout);
    assert_classes_shown(&stdout);

    // Plan gating: the gated key answers 402, then, with the gate lifted, 200 for the same key.
    let gating = stdout.split("== 4. Plan gating").nth(1).and_then(|s| s.split("\n== 5.").next()).unwrap_or_default();
    let paid = gating.find("crm-integration          -> 402 payment_required");
    let lifted = gating.find("crm-integration          -> 200 allowed");
    assert!(paid.is_some() && lifted.is_some() && paid < lifted, "the demo shows 402 then 200:\n{gating}");
    assert!(gating.contains("-> 401 unknown"), "a stranger still gets 401 while the set is gated:\n{gating}");

    // The agency key (ClusterApiKey): allowed by the verifiers of the two selected namespaces, unknown to the third's.
    let agency = stdout
        .split(". An agency key (ClusterApiKey)")
        .nth(1)
        .and_then(|s| s.split("\n== ").next())
        .unwrap_or_default();
    for (namespace, answer) in
        [("location-north", "200 allowed"), ("location-south", "200 allowed"), ("location-west", "401 unknown")]
    {
        let line = format!("verifier of {namespace} -> {answer}");
        assert!(agency.contains(&line), "the demo shows `{line}`:\n{agency}");
    }

    let mut secrets_tokens = Vec::new();
    let mut other_text = String::new();
    let mut kinds = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dump.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        kinds.insert(name.split('.').next().unwrap().to_owned());
        let text = std::fs::read_to_string(&path).unwrap();
        if name.starts_with("secret.") {
            let secret: Secret = serde_yaml::from_str(&text).unwrap();
            for value in secret.data.unwrap_or_default().into_values() {
                secrets_tokens.push(String::from_utf8(value.0).unwrap());
            }
        } else {
            other_text.push_str(&text);
        }
    }
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), ["apikey", "configmap", "event", "keyset", "secret"]);
    assert!(!secrets_tokens.is_empty(), "the live keys' Secrets hold tokens");
    for token in &secrets_tokens {
        assert!(!other_text.contains(token.as_str()), "a token appears outside its Secret");
    }
    assert!(token_shapes(&other_text).is_empty(), "a token-shaped string appears outside Secrets");
    assert!(Path::new(dump.path()).join("apikey.demo.partner-orders.yaml").exists());
}

/// The table after the requests shows each key's last use and 24-hour count, and the unused
/// key is walked through its three notices to its expiry as Unused.
fn assert_usage_and_notices_shown(stdout: &str) {
    let header = stdout.lines().find(|l| l.contains("NEXT ROTATION")).expect("a table is printed");
    assert!(header.contains("LAST USED") && header.contains("REQ 24H"), "{header}");
    let crm_used = stdout.lines().any(|l| {
        l.trim_start().starts_with("crm-integration ") && l.contains("2026-11-23T09:00:00Z") && l.contains(" 2 ")
    });
    assert!(crm_used, "crm-integration's row shows its last use and 2 requests:\n{stdout}");
    for point in ["15d", "7d", "1d"] {
        let line = format!(
            "ExpiringSoon  apikey/analytics-readonly  The key expires at 2026-12-23T09:00:00Z (Unused); notice {point} before"
        );
        assert_eq!(stdout.matches(&line).count(), 1, "the {point} notice, once:\n{stdout}");
    }
    assert!(stdout.contains("Ready=False (Unused)"), "the unused key's final state:\n{stdout}");
    assert!(
        stdout.lines().any(|l| l.trim_start().starts_with("analytics-readonly ") && l.contains("Expired")),
        "the table shows analytics-readonly Expired:\n{stdout}"
    );
}

/// The class step: a key of each class in the table with its class, a request each, a new key
/// breaking its class held back naming class and rule, and a narrowed key refused then back.
fn assert_classes_shown(stdout: &str) {
    let step = stdout.split("== 5. Key classes").nth(1).and_then(|s| s.split("\n== 6.").next()).unwrap_or_default();
    let header = step.lines().find(|l| l.contains("NEXT ROTATION")).expect("the class step prints the table");
    assert!(header.contains("CLASS"), "{header}");
    for (key, class) in [
        ("customer-dashboard", "demo-client"),
        ("partner-orders-sync", "demo-partner"),
        ("platform-automation", "demo-internal"),
    ] {
        let row = step.lines().find(|l| l.trim_start().starts_with(&format!("{key} ")));
        assert!(row.is_some_and(|r| r.contains("Active") && r.contains(class)), "{key} Active of {class}:\n{step}");
    }
    for call in [
        "GET    /analytics       customer-dashboard       -> 200 allowed",
        "POST   /orders          customer-dashboard       -> 403 insufficient_scope",
        "POST   /orders          partner-orders-sync      -> 200 allowed",
        "DELETE /leads/7         partner-orders-sync      -> 403 insufficient_scope",
        "DELETE /leads/7         platform-automation      -> 200 allowed",
    ] {
        assert!(step.contains(call), "the class step shows `{call}`:\n{step}");
    }
    assert!(
        step.contains(
            "customer-analytics-writer: Ready=False (ClassViolation): ApiKeyClass demo-client (allowedScopes): not allowed: analytics:write"
        ),
        "the key breaking its class is held back, naming class and rule:\n{step}"
    );
    let refused = step.find("GET    /analytics       customer-dashboard       -> 401 unknown");
    let back = step.rfind("GET    /analytics       customer-dashboard       -> 200 allowed");
    assert!(refused.is_some() && back.is_some() && refused < back, "the narrowed key: 401, then 200 again:\n{step}");
}
