//! Black-box tests of the `keyward` binary: crd, token, keyset, and the operator's flags.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn keyward(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the keyward binary starts");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn new_token(prefix: &str) -> String {
    let out = keyward(&["token", "new", "--prefix", prefix], "");
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim_end().to_owned()
}

#[test]
fn crd_prints_the_checked_in_crds() {
    for (args, file) in [
        (&["crd"][..], "crds/apikey.yaml"),
        (&["crd", "--kind", "KeySet"][..], "crds/keyset.yaml"),
        (&["crd", "--kind", "ClusterApiKey"][..], "crds/clusterapikey.yaml"),
    ] {
        let out = keyward(args, "");
        assert!(out.status.success());
        let checked_in = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
        assert_eq!(stdout(&out), checked_in, "{file}: run `make crds`");
    }
}

#[test]
fn crd_kind_apikeywebhook_prints_the_checked_in_webhook_crd() {
    let out = keyward(&["crd", "--kind", "ApiKeyWebhook"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/apikeywebhook.yaml");
    assert_eq!(stdout(&out), std::fs::read_to_string(path).unwrap());
}

#[test]
fn crd_kind_apikeyclass_prints_the_checked_in_apikeyclass_crd() {
    let out = keyward(&["crd", "--kind", "ApiKeyClass"], "");
    assert!(out.status.success());
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/apikeyclass.yaml");
    let checked_in = std::fs::read_to_string(path).unwrap();
    assert_eq!(stdout(&out), checked_in, "crds/apikeyclass.yaml is out of date: run `make crds`");
}

#[test]
fn the_helm_chart_carries_the_checked_in_crds_and_class_policy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (base, chart) in [
        ("crds/apikey.yaml", "charts/keyward/crds/apikey.yaml"),
        ("crds/apikeyclass.yaml", "charts/keyward/crds/apikeyclass.yaml"),
        ("crds/apikeywebhook.yaml", "charts/keyward/crds/apikeywebhook.yaml"),
        ("crds/keyset.yaml", "charts/keyward/crds/keyset.yaml"),
        ("crds/clusterapikey.yaml", "charts/keyward/crds/clusterapikey.yaml"),
        ("manifests/classes/policy.yaml", "charts/keyward/templates/classes-policy.yaml"),
    ] {
        let checked_in = std::fs::read_to_string(root.join(base)).unwrap();
        let copy = std::fs::read_to_string(root.join(chart)).unwrap_or_default();
        assert!(copy == checked_in, "{chart} differs from {base}: run `make crds` (CRDs) or tools/class-policy.py");
    }
}

#[test]
fn a_new_token_checks_and_hashes() {
    let token = new_token("acme_live");
    assert!(token.starts_with("acme_live_"), "unexpected shape");
    let check = keyward(&["token", "check", "--prefix", "acme_live"], &format!("{token}\n"));
    assert!(check.status.success(), "{}", stderr(&check));

    let hash = keyward(&["token", "hash", "--key-id"], &token);
    assert!(hash.status.success());
    let line = stdout(&hash);
    let (hash_text, key_id) = line.trim_end().split_once('\t').unwrap();
    assert!(hash_text.starts_with("sha256:") && hash_text.len() == 71, "{hash_text}");
    assert_eq!(key_id, &hash_text[7..19]);
}

#[test]
fn check_names_the_reason_and_fails_for_bad_tokens() {
    let token = new_token("kw");
    let mut typo = token.clone().into_bytes();
    let last = typo.len() - 10;
    typo[last] = if typo[last] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let cases = [
        (typo.as_str(), "checksum does not match"),
        ("kw_short", "characters, expected 39"),
        ("no-separator", "no '_' between prefix and body"),
    ];
    for (input, reason) in cases {
        let out = keyward(&["token", "check"], input);
        assert!(!out.status.success(), "accepted a bad token");
        assert!(stderr(&out).contains(reason), "stderr {:?} lacks {reason:?}", stderr(&out));
        assert!(!stderr(&out).contains(&token[3..]), "stderr echoed the token");
    }
    let wrong_prefix = keyward(&["token", "check", "--prefix", "acme"], &token);
    assert!(!wrong_prefix.status.success());
    assert!(stderr(&wrong_prefix).contains("prefix is not \"acme\""), "{}", stderr(&wrong_prefix));
}

#[test]
fn a_bad_prefix_is_refused_with_the_rule() {
    let out = keyward(&["token", "new", "--prefix", "Bad-Prefix"], "");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("must start with a lowercase letter"), "{}", stderr(&out));
}

#[test]
fn keyset_build_and_inspect_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = String::new();
    let mut hashes = Vec::new();
    for i in 0..50 {
        let token = new_token("kw");
        let hash = stdout(&keyward(&["token", "hash"], &token)).trim_end().to_owned();
        hashes.push(hash.clone());
        let limit = if i % 2 == 0 { r#","rateLimit":{"requests":10,"period":"1m"}"# } else { "" };
        writeln!(
            input,
            r#"{{"hash":"{hash}","name":"key-{i}","scopes":["orders:read"],"notBefore":"2026-11-01T00:00:00Z","state":"active"{limit}}}"#
        )
        .unwrap();
    }
    let out_dir = dir.path().to_str().unwrap();
    let build = keyward(
        &[
            "keyset",
            "build",
            "--name",
            "partners",
            "--namespace",
            "team-a",
            "--generation",
            "9",
            "--max-shard-bytes",
            "1024",
            "--out",
            out_dir,
        ],
        &input,
    );
    assert!(build.status.success(), "{}", stderr(&build));
    let files: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(files.len() > 1, "expected several shards, got {files:?}");
    assert!(files.iter().all(|f| f.starts_with("partners.") && f.ends_with(".keyset")), "{files:?}");

    let inspect = keyward(&["keyset", "inspect", out_dir], "");
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    let printed = stdout(&inspect);
    assert_eq!(printed.lines().count(), 50);
    for hash in &hashes {
        assert!(printed.contains(hash.as_str()), "record for {hash} missing");
    }

    // Building from what inspect printed gives identical shards.
    let rebuilt = tempfile::tempdir().unwrap();
    let again = keyward(
        &[
            "keyset",
            "build",
            "--name",
            "partners",
            "--namespace",
            "team-a",
            "--generation",
            "9",
            "--max-shard-bytes",
            "1024",
            "--out",
            rebuilt.path().to_str().unwrap(),
        ],
        &printed,
    );
    assert!(again.status.success(), "{}", stderr(&again));
    for file in &files {
        assert_eq!(
            std::fs::read(dir.path().join(file)).unwrap(),
            std::fs::read(rebuilt.path().join(file)).unwrap(),
            "{file} differs after a round trip"
        );
    }
}

#[test]
fn keyset_build_replaces_old_shards_of_the_same_set() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("partners.7.keyset"), "stale").unwrap();
    std::fs::write(dir.path().join("other.1.keyset"), "kept").unwrap();
    let out = keyward(&["keyset", "build", "--name", "partners", "--out", dir.path().to_str().unwrap()], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!dir.path().join("partners.7.keyset").exists());
    assert!(dir.path().join("partners.1.keyset").exists());
    assert_eq!(std::fs::read_to_string(dir.path().join("other.1.keyset")).unwrap(), "kept");
}

#[test]
fn keyset_build_reports_the_line_of_a_bad_record_without_echoing_it() {
    let token = new_token("kw");
    let input = format!(
        "{{\"hash\":\"{token}\",\"name\":\"a\",\"scopes\":[\"x:read\"],\"notBefore\":\"2026-11-01T00:00:00Z\",\"state\":\"active\"}}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = keyward(&["keyset", "build", "--name", "s", "--out", dir.path().to_str().unwrap()], &input);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("stdin line 1"), "{err}");
    assert!(!err.contains(&token[3..]), "the error echoed a token: {err}");
}

#[test]
fn keyset_inspect_reads_a_kubelet_style_volume() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/team-a.default.1.keyset");
    // kubelet's layout: ..data -> ..<timestamp>/, and a link per key through ..data.
    let mut dir = keyward_testkit::kubelet::KubeletDir::new();
    dir.publish_bytes(&[("default.1.keyset".to_owned(), std::fs::read(golden).unwrap())]);
    assert!(dir.path.join("..data").is_symlink(), "a kubelet-style volume");
    let out = keyward(&["keyset", "inspect", dir.path.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 4);
    assert!(stderr(&out).contains("keyset team-a/default generation 7: 4 records"), "{}", stderr(&out));
}

#[test]
fn keyset_inspect_names_line_and_field_of_a_corrupt_shard() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.1.keyset");
    std::fs::write(&path, "keyward-keyset v1 keyset=a/b generation=1 shard=1/1 records=1\nsha256:zz x a/b c:read 2026-01-01T00:00:00Z - active -\n").unwrap();
    let out = keyward(&["keyset", "inspect", path.to_str().unwrap()], "");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("line 2: field hash is missing or malformed"), "{}", stderr(&out));
}

#[test]
fn a_large_key_set_is_written_gzip_compressed_and_inspects_the_same() {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut input = String::new();
    for i in 0..2_000 {
        let hash = keyward::token::Token::generate(&keyward::token::Prefix::default(), &mut rng).hash();
        writeln!(
            input,
            r#"{{"hash":"{hash}","name":"integration-{i:05}","scopes":["orders:read","orders:write"],"notBefore":"2026-11-01T00:00:00Z","state":"active"}}"#
        )
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    let build = keyward(&["keyset", "build", "--name", "big", "--max-shard-bytes", "65536", "--out", out_dir], &input);
    assert!(build.status.success(), "{}", stderr(&build));
    let shard = std::fs::read(dir.path().join("big.1.keyset")).unwrap();
    assert_eq!(shard[..2], keyward::keyset::GZIP_MAGIC, "a multi-shard set should be gzip-compressed");
    let inspect = keyward(&["keyset", "inspect", out_dir], "");
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    assert_eq!(stdout(&inspect).lines().count(), 2_000);
}

#[test]
fn keyset_build_refuses_misspelt_or_repeated_fields() {
    let hash = stdout(&keyward(&["token", "hash"], &new_token("kw"))).trim_end().to_owned();
    let base = format!(
        r#""hash":"{hash}","name":"a","scopes":["x:read"],"notBefore":"2026-01-01T00:00:00Z","state":"active""#
    );
    let cases = [
        (format!(r#"{{{base},"notafter":"2026-02-01T00:00:00Z"}}"#), "unknown field `notafter`"),
        (format!(r#"{{{base},"ratelimit":{{"requests":1,"period":"1m"}}}}"#), "unknown field `ratelimit`"),
        (format!(r#"{{{base},"rateLimit":{{"requests":1,"period":"1m","brust":5}}}}"#), "unknown field `brust`"),
        (format!(r#"{{{base},"state":"inactive"}}"#), "duplicate field `state`"),
        (format!(r#"{{{base},"rateLimit":{{"requests":1,"period":"0s"}}}}"#), "rateLimit.period"),
        (format!(r#"{{{base},"notAfter":"2025-01-01T00:00:00Z"}}"#), "notAfter is not later than notBefore"),
    ];
    for (line, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = keyward(&["keyset", "build", "--name", "s", "--out", dir.path().to_str().unwrap()], &line);
        assert!(!out.status.success(), "accepted {line}");
        assert!(stderr(&out).contains(reason), "{reason:?} not in {}", stderr(&out));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "wrote shards for a refused input");
    }
}

#[test]
fn operator_help_documents_leader_election_and_the_admin_listener() {
    let out = keyward(&["operator", "--help"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let help = stdout(&out);
    for flag in [
        "--admin-listen",
        "--lease-name",
        "--lease-namespace",
        "--identity",
        "--lease-duration",
        "--renew-deadline",
        "--retry-period",
    ] {
        assert!(help.contains(flag), "missing {flag} in\n{help}");
    }
    assert!(help.contains("0.0.0.0:9090"), "{help}");
}

#[test]
fn operator_refuses_lease_durations_that_do_not_nest_before_connecting() {
    let out = keyward(&["operator", "--lease-duration", "5s", "--renew-deadline", "10s"], "");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("renew deadline"), "{}", stderr(&out));
}

/// `keyward operator` with `env` set, stdin closed; a free admin port unless `args` names one.
fn operator(args: &[&str], kubeconfig: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("operator")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .output()
        .expect("the keyward binary starts")
}

#[test]
fn a_missing_kubeconfig_is_reported_once_with_its_path() {
    let out = operator(&["--admin-listen", "127.0.0.1:0"], "/nonexistent");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(
        err.trim_end(),
        "keyward: cannot read kubeconfig /nonexistent (KUBECONFIG): No such file or directory (os error 2)",
        "one line, the path as written"
    );
    assert!(stdout(&out).is_empty(), "nothing on stdout: {}", stdout(&out));
}

#[test]
fn a_busy_admin_port_is_reported_with_its_address() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = busy.local_addr().unwrap().to_string();
    let out = operator(&["--admin-listen", &address], "/nonexistent");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("cannot listen on {address} (--admin-listen)")), "{err}");
    assert!(err.contains("in use"), "{err}");
}

#[test]
fn the_binary_named_kubectl_keyward_is_the_kubectl_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("kubectl-keyward");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_keyward"), &plugin).unwrap();
    let out = Command::new(&plugin).arg("--help").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let help = stdout(&out);
    assert!(help.contains("Usage: kubectl keyward [OPTIONS] <COMMAND>"), "{help}");
    for command in ["status", "rotate", "disable", "enable", "revoke", "token", "check"] {
        assert!(help.contains(&format!("  {command} ")), "{command} missing from\n{help}");
    }
    for flag in ["--namespace", "--context", "--kubeconfig"] {
        assert!(help.contains(flag), "{flag} missing from\n{help}");
    }
    // Under its own name the binary is keyward, with the plugin as `keyward kubectl`.
    let own = keyward(&["kubectl", "--help"], "");
    assert!(stdout(&own).contains("Usage: keyward kubectl [OPTIONS] <COMMAND>"), "{}", stdout(&own));
}

#[test]
fn the_plugin_names_an_unknown_context_and_an_unreadable_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::write(
        &config,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\n\
         users:\n- name: u\n  user: {}\ncontexts:\n- name: here\n  context: {cluster: c, user: u}\ncurrent-context: here\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let out = keyward(&["kubectl", "status", "crm", "--kubeconfig", config, "--context", "elsewhere"], "");
    assert!(!out.status.success());
    assert!(stderr(&out).starts_with(&format!("kubectl keyward: kubeconfig {config}:")), "{}", stderr(&out));
    assert!(stderr(&out).contains("elsewhere"), "{}", stderr(&out));

    let out = keyward(&["kubectl", "status", "crm", "--kubeconfig", "/nonexistent"], "");
    assert_eq!(
        stderr(&out).trim_end(),
        "kubectl keyward: cannot read kubeconfig /nonexistent (--kubeconfig): No such file or directory (os error 2)"
    );
}

#[test]
fn plugin_check_refuses_input_that_is_no_token_before_connecting_and_never_echoes_it() {
    let token = new_token("kw");
    let mut typo = token.clone().into_bytes();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    for input in [typo.as_str(), "not a token", ""] {
        let out = keyward(&["kubectl", "check", "--kubeconfig", "/nonexistent"], &format!("{input}\n"));
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.starts_with("kubectl keyward: standard input does not hold a well-formed keyward token: "),
            "{err}"
        );
        assert!(input.is_empty() || !err.contains(input), "the input is echoed: {err}");
        assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    }
    // A well-formed token gets as far as the cluster, and the error is about the kubeconfig.
    let out = keyward(&["kubectl", "check", "--kubeconfig", "/nonexistent"], &token);
    assert!(stderr(&out).contains("cannot read kubeconfig /nonexistent"), "{}", stderr(&out));
    assert!(!stderr(&out).contains(&token), "the token is echoed");
}

#[test]
fn keyset_build_writes_a_gate_and_inspect_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    let hash = stdout(&keyward(&["token", "hash"], &new_token("kw"))).trim_end().to_owned();
    let input = format!(
        r#"{{"hash":"{hash}","name":"crm","scopes":["leads:read"],"notBefore":"2026-01-01T00:00:00Z","state":"active"}}"#
    ) + "\n";
    let args = ["keyset", "build", "--name", "paid", "--namespace", "team-a", "--generation", "3", "--out", out_dir];
    let build = keyward(&[&args[..], &["--access", "payment-required"]].concat(), &input);
    assert!(build.status.success(), "{}", stderr(&build));
    let text = std::fs::read_to_string(dir.path().join("paid.1.keyset")).unwrap();
    assert!(
        text.starts_with("keyward-keyset v2 ") && text.lines().next().unwrap().ends_with(" access=payment-required")
    );
    let inspect = keyward(&["keyset", "inspect", out_dir], "");
    assert!(stderr(&inspect).contains("generation 3 access payment-required: 1 records"), "{}", stderr(&inspect));

    let bad = keyward(&[&args[..], &["--access", "free"]].concat(), &input);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("expected enabled, payment-required or disabled"), "{}", stderr(&bad));
}
