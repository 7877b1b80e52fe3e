//! `kubectl keyward` on the real API server, found by the real `kubectl` as a plugin (the
//! `keyward` binary symlinked as `kubectl-keyward` on PATH), with the shared operator doing
//! the work. Each test has its own namespace. No output but `token`'s stdout may hold a token.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use keyward::api::ApiKey;
use keyward::keyset::RecordState;
use keyward::token::Token;
use kube::{Api, Client};

use super::control_plane::{ControlPlane, client_from};
use super::lifecycle::operator;
use super::support::{apply, cluster_with_manifests, describe, eventually, is_ready, records, run_ok};

const MINUTE: Duration = Duration::from_secs(60);

/// A directory holding `kubectl-keyward`, a symlink to the keyward binary, for PATH.
fn plugin_dir(plane: &ControlPlane) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = plane.ready.dir.join("plugin-bin");
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_keyward"), dir.join("kubectl-keyward")).unwrap();
        dir
    })
}

/// `kubectl keyward ARGS` through kubectl's plugin lookup, as `kubeconfig`, with `stdin`
/// (`None`: not a terminal and empty).
fn plugin(plane: &ControlPlane, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let path = format!("{}:{}", plugin_dir(plane).display(), std::env::var("PATH").unwrap_or_default());
    let mut child = Command::new("kubectl")
        .arg("keyward")
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("PATH", path)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl keyward");
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// As the admin; fails the test unless it succeeds; (stdout, stderr).
fn plugin_ok(plane: &ControlPlane, args: &[&str], stdin: Option<&str>) -> (String, String) {
    let output = plugin(plane, plane.kubeconfig(), args, stdin);
    assert!(output.status.success(), "kubectl keyward {args:?}: {}", describe(&output));
    (String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap())
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// A fresh namespace with one Ready ApiKey `crm`; the admin client; its token.
async fn ready_key(namespace: &str, spec: &str) -> (&'static ControlPlane, Client, Token) {
    let plane = cluster_with_manifests();
    operator();
    run_ok(plane.kubectl().args(["create", "namespace", namespace]));
    let client = client_from(plane.kubeconfig()).await;
    let yaml = format!("apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: crm}}\nspec: {spec}\n");
    let output = apply(plane, namespace, &yaml);
    assert!(output.status.success(), "apply failed: {}", describe(&output));
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), namespace);
    eventually(&format!("{namespace}/crm Ready"), MINUTE, || async {
        keys.get_opt("crm").await.unwrap().filter(is_ready)
    })
    .await;
    let token = secret_token(&client, namespace).await.expect("the Secret holds a token");
    (plane, client, token)
}

async fn secret_token(client: &Client, namespace: &str) -> Option<Token> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let raw = secrets.get_opt("crm-apikey").await.unwrap()?.data?.remove("token")?.0;
    Token::parse(std::str::from_utf8(&raw).ok()?).ok()
}

async fn apikey(client: &Client, namespace: &str) -> ApiKey {
    Api::<ApiKey>::namespaced(client.clone(), namespace).get("crm").await.unwrap()
}

async fn with_state(client: &Client, namespace: &str, wanted: &str) -> ApiKey {
    eventually(&format!("{namespace}/crm {wanted}"), MINUTE, || async {
        let key = apikey(client, namespace).await;
        let state = key.status.as_ref().and_then(|s| s.state).map(|s| format!("{s:?}"));
        (state.as_deref() == Some(wanted) && key.status.as_ref()?.observed_generation == key.metadata.generation)
            .then_some(key)
    })
    .await
}

fn assert_no_token(output: &str, token: &Token) {
    assert!(!output.contains(token.expose()), "a token appears in the output:\n{}", keyward::token::redact(output));
}

#[tokio::test]
async fn status_shows_state_key_id_conditions_and_the_created_event() {
    let ns = "plugin-status";
    let (plane, client, token) = ready_key(ns, "{scopes: [orders:read], rotation: {every: 30d}}").await;
    let key_id = token.hash().key_id().to_string();
    let (out, err) = plugin_ok(plane, &["status", "crm", "-n", ns], None);
    for wanted in [
        format!("Name:          {ns}/crm"),
        "State:         Active".to_owned(),
        format!("Current key:   {key_id}  from "),
        "Next rotation: ".to_owned(),
        "Ready   True".to_owned(),
        "Created".to_owned(),
    ] {
        assert!(out.contains(&wanted), "missing {wanted:?} in:\n{out}");
    }
    assert!(!out.contains("Not Ready"), "{out}");
    assert_no_token(&format!("{out}{err}"), &token);

    // The same through `keyward kubectl`, without the plugin name.
    let direct = run_ok(
        Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["kubectl", "status", "crm", "-n", ns, "--kubeconfig"])
            .arg(plane.kubeconfig()),
    );
    assert!(direct.contains("State:         Active"), "{direct}");
    let _ = client;
}

#[tokio::test]
async fn a_missing_key_is_named_as_not_found() {
    let ns = "plugin-missing";
    let plane = cluster_with_manifests();
    run_ok(plane.kubectl().args(["create", "namespace", ns]));
    for command in ["status", "rotate", "disable", "enable", "token"] {
        let output = plugin(plane, plane.kubeconfig(), &[command, "nope", "-n", ns], None);
        assert!(!output.status.success(), "{command}: {}", describe(&output));
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(err.contains(&format!("kubectl keyward: ApiKey nope not found in namespace {ns}")), "{command}: {err}");
    }
}

#[tokio::test]
async fn rotate_asks_the_operator_for_a_new_token_and_status_shows_the_previous_one() {
    let ns = "plugin-rotate";
    let (plane, client, old) = ready_key(ns, "{scopes: [orders:read], rotation: {every: 90d, gracePeriod: 1h}}").await;
    let (out, err) = plugin_ok(plane, &["rotate", "crm", "-n", ns], None);
    assert!(out.contains("rotation requested (keyward.dev/rotate="), "{out}");
    let new = eventually("a new token in the Secret", MINUTE, || async {
        secret_token(&client, ns).await.filter(|t| t.hash() != old.hash())
    })
    .await;
    eventually("status to name the previous key", MINUTE, || async {
        let key = apikey(&client, ns).await;
        (key.status?.previous_key?.key_id == old.hash().key_id().as_str()).then_some(())
    })
    .await;
    let (status, status_err) = plugin_ok(plane, &["status", "crm", "-n", ns], None);
    assert!(status.contains(&format!("Previous key:  {}", old.hash().key_id())), "{status}");
    assert!(status.contains(&format!("Current key:   {}", new.hash().key_id())), "{status}");
    let key = apikey(&client, ns).await;
    assert!(managers(&key).contains(&"kubectl-keyward".to_owned()), "the annotation is written as kubectl-keyward");
    for output in [out, err, status, status_err] {
        assert_no_token(&output, &old);
        assert_no_token(&output, &new);
    }
}

#[tokio::test]
async fn disable_and_enable_switch_spec_active_and_the_operator_follows() {
    let ns = "plugin-disable";
    // Declared by an apply (field manager test-user), as a GitOps tool would.
    let (plane, client, token) = ready_key(ns, "{scopes: [orders:read], active: true}").await;
    let (out, err) = plugin_ok(plane, &["disable", "crm", "-n", ns], None);
    assert!(out.contains("disabled (spec.active=false)"), "{out}");
    assert!(err.contains("warning: spec.active is also declared by test-user"), "{err}");
    let key = with_state(&client, ns, "Inactive").await;
    assert!(!key.spec.active);
    let (again, _) = plugin_ok(plane, &["disable", "crm", "-n", ns], None);
    assert!(again.contains("already disabled"), "{again}");
    let (out, _) = plugin_ok(plane, &["enable", "crm", "-n", ns], None);
    assert!(out.contains("enabled (spec.active=true)"), "{out}");
    let key = with_state(&client, ns, "Active").await;
    assert!(key.spec.active);
    assert_eq!(secret_token(&client, ns).await.unwrap().hash(), token.hash(), "the same token throughout");
    assert!(managers(&key).contains(&"kubectl-keyward".to_owned()), "{:?}", managers(&key));
}

#[tokio::test]
async fn revoke_refuses_without_yes_when_stdin_is_not_a_terminal_and_revokes_with_it() {
    let ns = "plugin-revoke";
    let (plane, client, token) = ready_key(ns, "{scopes: [orders:read]}").await;
    let refused = plugin(plane, plane.kubeconfig(), &["revoke", "crm", "-n", ns], None);
    assert!(!refused.status.success(), "{}", describe(&refused));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("refusing to revoke") && err.contains("--yes") && err.contains("cannot be undone"), "{err}");
    // Also with something on stdin: a pipe is not a terminal, whatever it carries.
    let piped = plugin(plane, plane.kubeconfig(), &["revoke", "crm", "-n", ns], Some("crm\n"));
    assert!(!piped.status.success(), "{}", describe(&piped));
    assert!(!apikey(&client, ns).await.spec.revoked, "nothing was revoked");

    let (out, err) = plugin_ok(plane, &["revoke", "crm", "-n", ns, "--yes"], None);
    assert!(out.contains("revoked (spec.revoked=true)") && out.contains("cannot be undone"), "{out}");
    with_state(&client, ns, "Revoked").await;
    eventually("the token removed from the Secret", MINUTE, || async {
        secret_token(&client, ns).await.is_none().then_some(())
    })
    .await;
    let refused_token = plugin(plane, plane.kubeconfig(), &["token", "crm", "-n", ns], None);
    assert!(!refused_token.status.success());
    assert!(text(&refused_token).contains("is revoked"), "{}", describe(&refused_token));
    assert_no_token(&format!("{out}{err}{}", text(&refused)), &token);
}

/// `kubectl keyward ARGS` as the admin on a terminal (a pseudo-terminal from util-linux's
/// `script`), typing `typed`; the terminal's output.
fn plugin_on_terminal(plane: &ControlPlane, args: &[&str], typed: &str) -> Output {
    let path = format!("{}:{}", plugin_dir(plane).display(), std::env::var("PATH").unwrap_or_default());
    let line = format!("kubectl keyward {} --kubeconfig {}", args.join(" "), plane.kubeconfig().display());
    let mut child = Command::new("script")
        .args(["--quiet", "--return", "--command", &line, "/dev/null"])
        .env("PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script (util-linux)");
    child.stdin.take().unwrap().write_all(typed.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn revoke_on_a_terminal_asks_for_the_name_and_says_it_cannot_be_undone() {
    let ns = "plugin-revoke-tty";
    let (plane, client, token) = ready_key(ns, "{scopes: [orders:read]}").await;
    let wrong = plugin_on_terminal(plane, &["revoke", "crm", "-n", ns], "no\n");
    assert!(!wrong.status.success(), "{}", describe(&wrong));
    let said = text(&wrong);
    assert!(said.contains("This cannot be undone") && said.contains("Type the key's name (crm) to confirm"), "{said}");
    assert!(said.contains("not revoked: the answer did not match crm"), "{said}");
    assert!(!apikey(&client, ns).await.spec.revoked, "a wrong answer revokes nothing");

    let right = plugin_on_terminal(plane, &["revoke", "crm", "-n", ns], "crm\n");
    assert!(right.status.success(), "{}", describe(&right));
    assert!(text(&right).contains("revoked (spec.revoked=true)"), "{}", describe(&right));
    with_state(&client, ns, "Revoked").await;
    assert_no_token(&format!("{said}{}", text(&right)), &token);
}

#[tokio::test]
async fn token_prints_the_secrets_token_on_stdout_only_with_a_warning() {
    let ns = "plugin-token";
    let (plane, _client, token) = ready_key(ns, "{scopes: [orders:read]}").await;
    let (out, err) = plugin_ok(plane, &["token", "crm", "-n", ns], None);
    assert_eq!(out, format!("{}\n", token.expose()), "stdout is the token alone");
    assert!(err.contains("warning: this is a live credential") && err.contains("secret manager"), "{err}");
    assert!(err.contains(token.hash().key_id().as_str()), "the warning names the key id: {err}");
    assert_no_token(&err, &token);
}

#[tokio::test]
async fn check_names_the_key_of_a_token_and_never_prints_it() {
    let ns = "plugin-check";
    let (plane, _client, token) = ready_key(ns, "{scopes: [orders:read]}").await;
    let (out, err) = plugin_ok(plane, &["check", "-n", ns], Some(&format!("{}\n", token.expose())));
    assert!(
        out.contains(&format!("This token belongs to apikey.keyward.dev/crm in namespace {ns}: its current token")),
        "{out}"
    );
    assert!(out.contains(&format!("Key id:     {}", token.hash().key_id())), "{out}");
    assert!(out.contains("Published:  key set default, active"), "{out}");
    assert_no_token(&format!("{out}{err}"), &token);

    // Found from another namespace with -A.
    let (everywhere, _) = plugin_ok(plane, &["check", "-A", "-n", "default"], Some(token.expose()));
    assert!(everywhere.contains("apikey.keyward.dev/crm"), "{everywhere}");

    // A well-formed token nobody has: exit 1, named by key id only.
    let stranger = run_ok(Command::new(env!("CARGO_BIN_EXE_keyward")).args(["token", "new"]));
    let stranger = Token::parse(stranger.trim()).unwrap();
    let unknown = plugin(plane, plane.kubeconfig(), &["check", "-n", ns], Some(stranger.expose()));
    assert!(!unknown.status.success(), "{}", describe(&unknown));
    let said = text(&unknown);
    // "and no ClusterApiKey" too once their CRD is installed (the tests share one control plane).
    let key_id = stranger.hash().key_id();
    assert!(said.contains(&format!("No ApiKey in namespace {ns}")), "{said}");
    assert!(said.contains(&format!("has this token (key id {key_id})")), "{said}");
    assert_no_token(&said, &stranger);

    // Not a token at all: refused without echoing the input.
    let garbage = "kw_thisisnotavalidtokenatallbutlookslikeone";
    let bad = plugin(plane, plane.kubeconfig(), &["check", "-n", ns], Some(garbage));
    assert!(!bad.status.success());
    assert!(text(&bad).contains("does not hold a well-formed keyward token"), "{}", describe(&bad));
    assert!(!text(&bad).contains(garbage), "the input is echoed: {}", describe(&bad));
}

#[tokio::test]
async fn forbidden_names_the_verb_and_resource_the_user_lacks() {
    let ns = "plugin-rbac";
    let (plane, _client, token) = ready_key(ns, "{scopes: [orders:read]}").await;
    // A viewer may read ApiKeys and nothing else (no Events, no Secrets, no patch).
    let rbac = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: viewer, namespace: {ns}}}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: nobody, namespace: {ns}}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: apikey-viewer, namespace: {ns}}}\n\
         rules:\n- {{apiGroups: [keyward.dev], resources: [apikeys], verbs: [get, list]}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: viewer, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: apikey-viewer}}\n\
         subjects:\n- {{kind: ServiceAccount, name: viewer, namespace: {ns}}}\n"
    );
    let output = apply(plane, ns, &rbac);
    assert!(output.status.success(), "{}", describe(&output));
    let viewer = plane.service_account_kubeconfig(ns, "viewer");
    let nobody = plane.service_account_kubeconfig(ns, "nobody");

    let refused = |kubeconfig: &Path, args: &[&str], verb: &str, resource: &str| {
        let output = plugin(plane, kubeconfig, args, None);
        assert!(!output.status.success(), "{args:?}: {}", describe(&output));
        let err = String::from_utf8_lossy(&output.stderr).into_owned();
        let wanted = format!("forbidden: you may not {verb} {resource} in namespace {ns}");
        assert!(err.contains(&wanted), "{args:?}: {wanted:?} not in {err}");
        assert!(err.contains(&format!("kubectl auth can-i {verb} {resource} -n {ns}")), "{err}");
        assert_no_token(&err, &token);
    };
    refused(&nobody, &["status", "crm", "-n", ns], "get", "apikeys.keyward.dev");
    refused(&viewer, &["disable", "crm", "-n", ns], "patch", "apikeys.keyward.dev");
    refused(&viewer, &["rotate", "crm", "-n", ns], "patch", "apikeys.keyward.dev");
    refused(&viewer, &["revoke", "crm", "-n", ns, "--yes"], "patch", "apikeys.keyward.dev");
    refused(&viewer, &["token", "crm", "-n", ns], "get", "secrets");
    let output = plugin(plane, &nobody, &["check", "-n", ns], Some(token.expose()));
    assert!(text(&output).contains("you may not list apikeys.keyward.dev"), "{}", describe(&output));
    assert_no_token(&text(&output), &token);

    // The viewer's status still works; the Events it may not list are said to be missing, and why.
    let output = plugin(plane, &viewer, &["status", "crm", "-n", ns], None);
    assert!(output.status.success(), "{}", describe(&output));
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(out.contains("State:         Active"), "{out}");
    assert!(out.contains("(not shown: forbidden: you may not list events"), "{out}");
    // Without -n, the namespace of the kubeconfig's context (the ServiceAccount's here).
    let output = plugin(plane, &viewer, &["status", "crm"], None);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(&format!("Name:          {ns}/crm")),
        "{}",
        describe(&output)
    );
    // `check` without `list configmaps` answers from status, and says so.
    let output = plugin(plane, &viewer, &["check", "-n", ns], Some(token.expose()));
    assert!(output.status.success(), "{}", describe(&output));
    assert!(text(&output).contains("note: key sets not read"), "{}", describe(&output));
    assert_no_token(&text(&output), &token);
}

/// The field managers of `key`'s managedFields.
fn managers(key: &ApiKey) -> Vec<String> {
    key.metadata.managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect()
}

#[tokio::test]
async fn a_cluster_key_is_named_cak_slash_name_for_status_disable_enable_and_token() {
    use keyward::api::ClusterApiKey;
    let platform = "plugin-cak-platform";
    let plane = cluster_with_manifests();
    operator();
    super::support::install_crd(plane, "crds/clusterapikey.yaml", "clusterapikeys.keyward.dev");
    for ns in [platform, "plugin-cak-a"] {
        run_ok(plane.kubectl().args(["create", "namespace", ns]));
    }
    run_ok(plane.kubectl().args(["label", "namespace", "plugin-cak-a", "plugin-agency=yes"]));
    let client = client_from(plane.kubeconfig()).await;
    let keys: Api<ClusterApiKey> = Api::all(client.clone());
    let key: ClusterApiKey = serde_json::from_value(serde_json::json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ClusterApiKey", "metadata": {"name": "plugin-agency"},
        "spec": {"scopes": ["orders:read"], "secretNamespace": platform,
                 "namespaceSelector": {"matchLabels": {"plugin-agency": "yes"}}}}))
    .unwrap();
    keys.create(&kube::api::PostParams::default(), &key).await.unwrap();
    let state = |wanted: &'static str| {
        let keys = keys.clone();
        async move {
            eventually(&format!("plugin-agency {wanted}"), MINUTE, || async {
                let key = keys.get("plugin-agency").await.unwrap();
                let status = key.status.as_ref()?;
                (status.key.state.map(|s| format!("{s:?}")).as_deref() == Some(wanted)
                    && status.key.observed_generation == key.metadata.generation)
                    .then_some(())
            })
            .await;
        }
    };
    state("Active").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), platform);
    let raw = secrets.get("plugin-agency-apikey").await.unwrap().data.unwrap().remove("token").unwrap().0;
    let token = Token::parse(std::str::from_utf8(&raw).unwrap()).unwrap();

    // -n names any namespace: a ClusterApiKey is in none.
    let (out, err) = plugin_ok(plane, &["status", "cak/plugin-agency", "-n", "default"], None);
    for wanted in [
        "Name:          plugin-agency (ClusterApiKey)".to_owned(),
        format!("Secret:        {platform}/plugin-agency-apikey"),
        "Namespaces:    plugin-cak-a".to_owned(),
        "State:         Active".to_owned(),
        "Created".to_owned(),
    ] {
        assert!(out.contains(&wanted), "missing {wanted:?} in:\n{out}");
    }
    assert_no_token(&format!("{out}{err}"), &token);

    let (out, err) = plugin_ok(plane, &["disable", "clusterapikey/plugin-agency"], None);
    assert!(out.contains("clusterapikey.keyward.dev/plugin-agency disabled (spec.active=false)"), "{out}");
    state("Inactive").await;
    let (out, _) = plugin_ok(plane, &["enable", "cak/plugin-agency"], None);
    assert!(out.contains("enabled (spec.active=true)"), "{out}");
    state("Active").await;
    let written = keys.get("plugin-agency").await.unwrap();
    let managers: Vec<String> =
        written.metadata.managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect();
    assert!(managers.contains(&"kubectl-keyward".to_owned()), "{managers:?}");
    assert_no_token(&format!("{out}{err}"), &token);

    let (out, err) = plugin_ok(plane, &["token", "cak/plugin-agency"], None);
    assert_eq!(out.trim_end(), token.expose(), "the token of {platform}/plugin-agency-apikey, alone on stdout");
    assert!(err.contains("live credential for clusterapikey plugin-agency"), "{err}");
    assert_no_token(&err, &token);

    // `check` in a namespace the key is published to finds it among the ClusterApiKeys.
    // The status says Active before the key set is rebuilt: wait for the set to say so too.
    let hash = token.hash();
    eventually("plugin-agency active in plugin-cak-a's key set", MINUTE, || async {
        records(&client, "plugin-cak-a", "default")
            .await
            .iter()
            .any(|r| r.hash == hash && r.state == RecordState::Active)
            .then_some(())
    })
    .await;
    let line = format!("{}\n", token.expose());
    let (out, err) = plugin_ok(plane, &["check", "-n", "plugin-cak-a"], Some(&line));
    assert!(
        out.starts_with(&format!(
            "This token belongs to clusterapikey.keyward.dev/plugin-agency (cluster-wide, Secret in namespace {platform}): its current token"
        )),
        "{out}"
    );
    assert!(out.contains("Published:  key set default, active"), "{out}");
    assert_no_token(&format!("{out}{err}"), &token);

    // Someone without rights on ClusterApiKeys is told the cluster-wide verb and resource.
    run_ok(plane.kubectl().args(["create", "serviceaccount", "nobody", "-n", platform]));
    let nobody = plane.service_account_kubeconfig(platform, "nobody");
    let refused = plugin(plane, &nobody, &["rotate", "cak/plugin-agency"], None);
    assert!(!refused.status.success(), "{}", describe(&refused));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("forbidden: you may not get clusterapikeys.keyward.dev cluster-wide"), "{err}");
    assert!(err.contains("`kubectl auth can-i get clusterapikeys.keyward.dev`"), "{err}");
    let missing = plugin(plane, plane.kubeconfig(), &["status", "cak/nope"], None);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("kubectl keyward: ClusterApiKey nope not found"));
}
