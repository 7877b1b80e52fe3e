//! Installing keyward: the CRD, `manifests/` and `examples/` on a real API server, and
//! what `kubectl` shows of ApiKeys (the server-side Table, categories, short name, explain).

use super::control_plane::harness_binary;
use super::support::{cluster, cluster_with_manifests, describe, install_crd, repo, run_ok};

#[test]
fn the_crd_is_established_and_every_cel_rule_is_within_the_cost_budget() {
    cluster();
    let rules = cel_rules_within_budget("crds/apikey.yaml");
    assert!(rules >= 10, "crd-cost lists every CEL rule of the ApiKey CRD, found {rules}");
}

#[test]
fn the_webhook_crd_is_established_and_its_cel_rules_are_within_the_cost_budget() {
    install_crd(cluster(), "crds/apikeywebhook.yaml", "apikeywebhooks.keyward.dev");
    let rules = cel_rules_within_budget("crds/apikeywebhook.yaml");
    assert_eq!(rules, 2, "crd-cost lists the url and events rules");
}

/// The API server's own CRD validation of `file`, with each rule's estimated cost beside its
/// limit: every rule within a tenth of its budget. Returns how many rules it listed.
fn cel_rules_within_budget(file: &str) -> usize {
    let output = std::process::Command::new(harness_binary()).arg("crd-cost").arg(repo(file)).output().unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    println!("{file}:\n{table}");
    assert!(output.status.success(), "the API server's CRD validation refuses {file}: {}", describe(&output));
    for line in table.lines().skip(1) {
        let mut fields = line.split('\t');
        let cost: u64 = fields.next().unwrap().parse().unwrap();
        let limit: u64 = fields.next().unwrap().parse().unwrap();
        assert!(cost <= limit / 10, "a rule within a tenth of its budget leaves room to grow: {line}");
    }
    table.lines().filter(|l| l.contains("x-kubernetes-validations")).count()
}

#[test]
fn the_keyset_crd_is_established_and_its_cel_rule_is_within_the_cost_budget() {
    cluster();
    let output =
        std::process::Command::new(harness_binary()).arg("crd-cost").arg(repo("crds/keyset.yaml")).output().unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the API server's CRD validation refuses crds/keyset.yaml: {}", describe(&output));
    let rules: Vec<&str> = table.lines().filter(|l| l.contains("x-kubernetes-validations")).collect();
    assert_eq!(rules.len(), 1, "the name rule:\n{table}");
    for line in rules {
        let mut fields = line.split('\t');
        let cost: u64 = fields.next().unwrap().parse().unwrap();
        let limit: u64 = fields.next().unwrap().parse().unwrap();
        assert!(cost <= limit / 10, "a rule within a tenth of its budget leaves room to grow: {line}");
    }
}

#[test]
fn manifests_and_examples_are_accepted_also_as_server_side_dry_runs() {
    let plane = cluster_with_manifests();
    run_ok(plane.kubectl().args(["apply", "--dry-run=server", "-k"]).arg(repo("manifests")));
    run_ok(plane.kubectl().args(["apply", "-k"]).arg(repo("examples")));
    run_ok(plane.kubectl().args(["apply", "--dry-run=server", "-k"]).arg(repo("examples")));
    let names = run_ok(plane.kubectl().args(["get", "apikeys", "-n", "keyward-examples", "-o", "name"]));
    assert_eq!(names.lines().count(), 5, "the five example ApiKeys are stored: {names}");
}

/// `make helm`'s helm (built from its Go module into target/tools/bin once, then reused).
fn helm() -> std::path::PathBuf {
    run_ok(std::process::Command::new("make").args(["--no-print-directory", "-C"]).arg(repo("")).arg("helm"));
    repo("target/tools/bin/helm")
}

#[test]
fn the_helm_chart_is_accepted_as_a_server_side_dry_run() {
    let plane = cluster_with_manifests();
    // The default rendering, plus the optional objects the control plane has kinds for.
    let rendered = run_ok(
        std::process::Command::new(helm())
            .args([
                "template",
                "keyward",
                "--kube-version",
                "1.34.0",
                "--namespace",
                "keyward-system",
                "--include-crds",
                "--set",
                "namespace.create=true",
                "--set",
                "verifierRBAC.namespaces={keyward-system}",
            ])
            .arg(repo("charts/keyward")),
    );
    let mut child = plane
        .kubectl()
        .args(["apply", "--dry-run=server", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), rendered.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the API server refuses the chart's rendering: {}", describe(&output));
    let applied = String::from_utf8_lossy(&output.stdout);
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/apikeys.keyward.dev",
        "deployment.apps/keyward-operator",
        "poddisruptionbudget.policy/keyward-operator",
        "clusterrole.rbac.authorization.k8s.io/keyward-operator",
        "role.rbac.authorization.k8s.io/keyward-verifier",
        "service/keyward-operator-metrics",
    ] {
        assert!(applied.contains(object), "{object} is in the dry run:\n{applied}");
    }
}

#[test]
fn kubectl_shows_the_documented_columns_category_short_name_and_field_docs() {
    let plane = cluster();
    run_ok(plane.kubectl().args(["create", "namespace", "kubectl-view"]));
    run_ok(
        plane.kubectl().args(["apply", "-n", "kubectl-view", "-f"]).arg(repo("examples/apikeys/partner-orders.yaml")),
    );

    let header = |args: &[&str]| -> String {
        let out = run_ok(plane.kubectl().args(["get", "-n", "kubectl-view"]).args(args));
        out.lines().next().unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let columns = "NAME STATE PREFIX CLASS SCOPES EXPIRES NEXT ROTATION LAST USED AGE";
    assert_eq!(header(&["apikeys"]), columns);
    // -o wide adds the requests allowed in the last 24 hours (status.usage).
    assert_eq!(
        header(&["apikeys", "-o", "wide"]),
        "NAME STATE PREFIX CLASS SCOPES EXPIRES NEXT ROTATION LAST USED REQUESTS 24H AGE"
    );
    assert_eq!(header(&["ak"]), columns, "short name ak");
    let category = run_ok(plane.kubectl().args(["get", "keyward", "-n", "kubectl-view", "-o", "name"]));
    assert_eq!(category.trim(), "apikey.keyward.dev/partner-orders", "category keyward lists ApiKeys");

    let row = run_ok(plane.kubectl().args(["get", "ak", "partner-orders", "-n", "kubectl-view", "--no-headers"]));
    assert!(row.contains("orders:read"), "the Scopes column lists the scopes: {row}");
    assert!(!row.contains("<invalid>"), "no column renders as <invalid>: {row}");

    let explain = run_ok(plane.kubectl().args(["explain", "apikey.spec.rotation"]));
    for field in ["every", "schedule", "gracePeriod"] {
        assert!(explain.contains(field), "kubectl explain documents rotation.{field}:\n{explain}");
    }
    assert!(explain.contains("KIND:     ApiKey") || explain.contains("KIND:       ApiKey"), "{explain}");
}
