//! The example workloads in `examples/workloads` agree with the code: every
//! `keyward` container's arguments parse with the real command line, every
//! Secret and key-set ConfigMap a pod mounts is one the operator creates for the
//! example ApiKeys, probes and Services point at ports that are listened on, and
//! the nginx configuration is the one `tests/verifier_nginx.rs` runs.
//! (`make manifests-check` validates the same files against the Kubernetes schemas.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Parser;
use keyward::api::ApiKey;
use keyward::cli::Cli;
use keyward::keyset::shard_file_name;
use keyward::plan::{DATA_TOKEN, secret_name};
use serde::Deserialize;
use serde_json::Value;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// The files `examples/kustomization.yaml` lists, relative to `examples/`.
fn kustomization_resources() -> Vec<String> {
    let text = std::fs::read_to_string(examples_dir().join("kustomization.yaml")).unwrap();
    let value: Value = serde_yaml::from_str(&text).unwrap();
    value["resources"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()).collect()
}

/// Every object of every listed file (multi-document YAML split).
fn objects() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for file in kustomization_resources() {
        let text = std::fs::read_to_string(examples_dir().join(&file)).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}"));
            if !value.is_null() {
                out.push((file.clone(), value));
            }
        }
    }
    out
}

fn of_kind<'a>(objects: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|(_, o)| o["kind"] == kind).map(|(_, o)| o).collect()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap()
}

fn example_keys(objects: &[(String, Value)]) -> Vec<ApiKey> {
    of_kind(objects, "ApiKey").into_iter().map(|o| serde_json::from_value(o.clone()).unwrap()).collect()
}

fn deployments(objects: &[(String, Value)]) -> Vec<&Value> {
    let deployments = of_kind(objects, "Deployment");
    assert!(deployments.len() >= 3, "client, sidecar and nginx examples");
    deployments
}

fn keyward_containers(deployment: &Value) -> Vec<&Value> {
    containers(deployment).into_iter().filter(|c| c["image"].as_str().unwrap().starts_with("keyward:")).collect()
}

fn containers(deployment: &Value) -> Vec<&Value> {
    deployment["spec"]["template"]["spec"]["containers"].as_array().unwrap().iter().collect()
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect()).unwrap_or_default()
}

/// The value of `--flag=value` or `--flag value` in `args`.
fn flag(args: &[String], flag: &str) -> Option<String> {
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if let Some(v) = a.strip_prefix(&prefix) {
            Some(v.to_owned())
        } else if a == flag {
            args.get(i + 1).cloned()
        } else {
            None
        }
    })
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn the_kustomization_lists_every_example_file() {
    let listed: BTreeSet<String> = kustomization_resources().into_iter().collect();
    for sub in ["apikeys", "workloads"] {
        for entry in std::fs::read_dir(examples_dir().join(sub)).unwrap() {
            let file = format!("{sub}/{}", entry.unwrap().file_name().to_string_lossy());
            assert!(listed.contains(&file), "{file} is not in examples/kustomization.yaml, so nothing applies it");
        }
    }
}

#[test]
fn every_keyward_container_parses_with_the_real_cli() {
    let objects = objects();
    let mut seen = 0;
    for deployment in deployments(&objects) {
        for container in keyward_containers(deployment) {
            assert!(container["command"].is_null(), "the image's entrypoint is keyward");
            let args = strings(&container["args"]);
            let command_line = std::iter::once("keyward".to_owned()).chain(args.iter().cloned());
            if let Err(e) = Cli::try_parse_from(command_line) {
                panic!("{} {}: {args:?} does not parse:\n{e}", name(deployment), container["name"]);
            }
            seen += 1;
        }
    }
    assert!(seen >= 2, "the sidecar and nginx examples run the verifier");
}

#[test]
fn every_mounted_secret_is_one_the_operator_writes() {
    let objects = objects();
    let secrets: BTreeSet<String> = example_keys(&objects).iter().map(secret_name).collect();
    let mut seen = 0;
    for deployment in deployments(&objects) {
        for volume in deployment["spec"]["template"]["spec"]["volumes"].as_array().into_iter().flatten() {
            let secret = &volume["secret"];
            if secret.is_null() {
                continue;
            }
            let secret_name = secret["secretName"].as_str().unwrap();
            assert!(secrets.contains(secret_name), "{}: no example ApiKey has Secret {secret_name}", name(deployment));
            for item in secret["items"].as_array().into_iter().flatten() {
                assert_eq!(item["key"], DATA_TOKEN, "{}: the Secret's only key is {DATA_TOKEN}", name(deployment));
            }
            seen += 1;
        }
    }
    assert_eq!(seen, 1, "the client example mounts its key's Secret");
}

/// Key-set shard ConfigMaps a volume names: (ConfigMap name, optional, item keys).
fn configmap_sources(volume: &Value) -> Vec<(String, bool, Vec<String>)> {
    let mut sources: Vec<&Value> = vec![&volume["configMap"]];
    sources.extend(volume["projected"]["sources"].as_array().into_iter().flatten().map(|s| &s["configMap"]));
    sources
        .into_iter()
        .filter(|c| !c.is_null())
        .map(|c| {
            let items = c["items"].as_array().into_iter().flatten().map(|i| i["key"].as_str().unwrap().to_owned());
            (c["name"].as_str().unwrap().to_owned(), c["optional"] == true, items.collect())
        })
        .collect()
}

#[test]
fn every_keyset_dir_mounts_shards_of_an_example_key_set() {
    let objects = objects();
    let key_sets: BTreeSet<String> = example_keys(&objects).iter().map(|k| k.spec.key_set.clone()).collect();
    let own_configmaps: BTreeSet<&str> = of_kind(&objects, "ConfigMap").into_iter().map(name).collect();
    let mut seen = 0;
    for deployment in deployments(&objects) {
        let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_array().cloned().unwrap_or_default();
        // Every ConfigMap mounted is either one of the examples' own or a key-set shard.
        for volume in &volumes {
            for (cm, optional, items) in configmap_sources(volume) {
                if own_configmaps.contains(cm.as_str()) {
                    continue;
                }
                let (set, index) = cm
                    .strip_prefix("keyset-")
                    .and_then(|rest| rest.rsplit_once('-'))
                    .and_then(|(set, i)| Some((set.to_owned(), i.parse::<usize>().ok()?)))
                    .unwrap_or_else(|| {
                        panic!("{}: {cm} is neither an example ConfigMap nor a shard", name(deployment))
                    });
                assert!(key_sets.contains(&set), "{}: no example ApiKey is in key set {set}", name(deployment));
                assert!(index >= 1);
                assert!(optional, "{}: shard {cm} must be optional (it may not exist yet)", name(deployment));
                for item in items {
                    assert_eq!(item, shard_file_name(&set, index), "{}: {cm}", name(deployment));
                }
            }
        }
        // Every --keyset-dir is a mount of one key set's shards 1..n.
        for container in keyward_containers(deployment) {
            let args = strings(&container["args"]);
            let Some(dir) = flag(&args, "--keyset-dir") else { continue };
            let mount = container["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["mountPath"] == dir.as_str())
                .unwrap_or_else(|| panic!("{}: nothing is mounted at {dir}", name(deployment)));
            assert_eq!(mount["readOnly"], true);
            let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
            let shards: Vec<String> = configmap_sources(volume).into_iter().map(|(cm, _, _)| cm).collect();
            let set = dir.rsplit('/').next().unwrap();
            let expected: Vec<String> = (1..=shards.len()).map(|i| format!("keyset-{set}-{i}")).collect();
            assert_eq!(shards, expected, "{}: {dir} mounts shards 1..n of key set {set}", name(deployment));
            seen += 1;
        }
    }
    assert!(seen >= 2);
}

#[test]
fn probes_and_services_point_at_listened_ports() {
    let objects = objects();
    for deployment in deployments(&objects) {
        for container in keyward_containers(deployment) {
            let args = strings(&container["args"]);
            let ports = container["ports"].as_array().unwrap();
            let named = |n: &str| ports.iter().find(|p| p["name"] == n).map(|p| p["containerPort"].as_u64().unwrap());
            let admin = flag(&args, "--admin-listen").expect("--admin-listen set explicitly");
            let probe = &container["readinessProbe"]["httpGet"];
            assert_eq!(probe["path"], "/readyz");
            assert_eq!(named(probe["port"].as_str().unwrap()), Some(u64::from(port_of(&admin))));
            assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
            if flag(&args, "--upstream").is_some() {
                let listen = flag(&args, "--listen").unwrap();
                assert!(listen.starts_with("0.0.0.0:"), "a proxy sidecar listens for the Service");
                assert_eq!(named("http"), Some(u64::from(port_of(&listen))));
            } else {
                let listen = flag(&args, "--listen").unwrap();
                assert!(listen.starts_with("127.0.0.1:"), "forward-auth is only for the proxy in the pod");
            }
        }
    }
    // Every Service targets a named port of its Deployment's pods.
    for service in of_kind(&objects, "Service") {
        let deployment = of_kind(&objects, "Deployment").into_iter().find(|d| name(d) == name(service)).unwrap();
        assert_eq!(service["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"]);
        let port_names: BTreeSet<String> = containers(deployment)
            .iter()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        for port in service["spec"]["ports"].as_array().unwrap() {
            let target = port["targetPort"].as_str().unwrap();
            assert!(port_names.contains(target), "{}: no container port {target}", name(service));
        }
    }
}

#[test]
fn the_nginx_example_runs_the_tested_configuration() {
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/verifier.md")).unwrap();
    let start = docs.find("```nginx\n").unwrap() + "```nginx\n".len();
    let tested = &docs[start..start + docs[start..].find("```").unwrap()];
    let objects = objects();
    let configmap = of_kind(&objects, "ConfigMap").into_iter().find(|c| name(c) == "crm-api-nginx").unwrap();
    let example = configmap["data"]["default.conf"].as_str().unwrap();
    // The one difference: an unprivileged nginx cannot listen on port 80.
    assert_eq!(example, tested.replace("  listen 80;\n", "  listen 8000;\n"));
    // And it is what tests/verifier_nginx.rs runs: every directive, in order, with the
    // test's addresses in place of the pod's (the test adds its own comments and paths).
    let test_source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/verifier_nginx.rs")).unwrap();
    let test_lines: Vec<String> = test_source.lines().map(|l| l.trim().replace("{{", "{").replace("}}", "}")).collect();
    let mut at = 0;
    for line in example.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let line = line
            .replace("server 127.0.0.1:8080;", "server {verifier};")
            .replace("http://127.0.0.1:3000;", "http://{app};")
            .replace("listen 8000;", "listen {listen};");
        let found = test_lines[at..].iter().position(|l| *l == line);
        let found = found.unwrap_or_else(|| panic!("tests/verifier_nginx.rs does not run `{line}` (in this order)"));
        at += found + 1;
    }
}

#[test]
fn the_verifier_rbac_reads_configmaps_and_writes_only_configmaps() {
    let objects = objects();
    let roles = of_kind(&objects, "Role");
    assert_eq!(roles.len(), 1);
    let role_rules = roles[0]["rules"].as_array().unwrap();
    assert_eq!(role_rules.len(), 2, "{role_rules:?}");
    for rule in role_rules {
        assert_eq!(strings(&rule["apiGroups"]), [""]);
        assert_eq!(strings(&rule["resources"]), ["configmaps"]);
    }
    assert_eq!(strings(&role_rules[0]["verbs"]), ["get", "list", "watch"]);
    // The usage report: created and rewritten by server-side apply; never deleted (garbage collection does it).
    assert_eq!(strings(&role_rules[1]["verbs"]), ["create", "patch"]);
    assert!(of_kind(&objects, "ClusterRole").is_empty() && of_kind(&objects, "ClusterRoleBinding").is_empty());
    // The flag such a verifier runs with parses.
    let argv =
        ["keyward", "verifier", "--watch-keyset", "keyward-examples/default", "--upstream", "http://127.0.0.1:3000"];
    Cli::try_parse_from(argv).unwrap();
}
