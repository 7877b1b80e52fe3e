//! The shipped binary end to end: `keyward operator` in its own process, configured by a
//! kubeconfig, against `keyward fake-apiserver` over loopback HTTP. Proves the operator starts
//! from a kubeconfig (it once crashed there: two TLS providers were compiled in), carries a new
//! key to Ready with its token in the Secret and only its hash in the key set, stops cleanly on
//! SIGTERM, and logs no token.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use keyward::api::ApiKey;
use keyward::token::Token;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// Kills the child if the test ends early, so no process outlives a failing test.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn client(kubeconfig: &Path) -> Client {
    keyward::cli::install_crypto_provider();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    Client::try_from(config).unwrap()
}

fn ready(key: &ApiKey) -> bool {
    key.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Every record hash published in the key-set shards of `namespace`.
async fn published_hashes(client: &Client, namespace: &str) -> Vec<String> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let shards = maps.list(&ListParams::default().labels("keyward.dev/keyset")).await.unwrap();
    let mut hashes = Vec::new();
    for map in shards.items {
        let texts = map.data.unwrap_or_default().into_values().map(String::into_bytes);
        let binaries = map.binary_data.unwrap_or_default().into_values().map(|b| b.0);
        for bytes in texts.chain(binaries) {
            let shard = keyward::keyset::decode_shard(&bytes).expect("the published shard decodes");
            hashes.extend(shard.records.iter().map(|r| r.hash.to_string()));
        }
    }
    hashes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_binary_carries_a_key_to_ready_over_http_and_stops_on_sigterm() {
    let binary = env!("CARGO_BIN_EXE_keyward");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut server = Guard(
        Command::new(binary)
            .args(["fake-apiserver", "--listen", "127.0.0.1:0", "--kubeconfig-out"])
            .arg(&kubeconfig)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("http://127.0.0.1:"), "the server says where it listens: {line}");

    let log = dir.path().join("operator.log");
    let mut operator = Guard(
        Command::new(binary)
            .args(["operator", "--admin-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--propagation-delay", "1s", "--publish-poll", "500ms", "--identity", "test", "--log", "debug"])
            .env("KUBECONFIG", &kubeconfig)
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(std::fs::File::create(dir.path().join("operator.stdout")).unwrap())
            .spawn()
            .unwrap(),
    );

    let client = client(&kubeconfig).await;
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), "team-a");
    let key: ApiKey = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey",
        "metadata": {"name": "crm"},
        "spec": {"scopes": ["orders:read"]},
    }))
    .unwrap();
    keys.create(&PostParams::default(), &key).await.unwrap();

    let key = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let key = keys.get("crm").await.unwrap();
            if ready(&key) {
                return key;
            }
            if let Some(status) = operator.0.try_wait().unwrap() {
                panic!("the operator exited with {status}: {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the key turns Ready within a minute");

    let secret = Api::<Secret>::namespaced(client.clone(), "team-a").get("crm-apikey").await.unwrap();
    let raw = secret.data.unwrap().remove("token").expect("the Secret holds the token").0;
    let token = Token::parse(&String::from_utf8(raw).unwrap()).expect("a well-formed token");
    let current = key.status.unwrap().current_key.expect("status names the current key");
    assert_eq!(current.key_id, token.hash().key_id().as_str());
    assert_eq!(published_hashes(&client, "team-a").await, vec![token.hash().to_string()]);

    let pid = operator.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let stopped = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(status) = operator.0.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the operator stops within a minute of SIGTERM");
    assert!(stopped.success(), "the operator exits 0 on SIGTERM, got {stopped}");

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("\"namespace\":\"team-a\""), "the log is JSON and names the key's namespace");
    assert!(!logged.contains(token.expose()), "no token in the operator's log");
    let stdout = std::fs::read_to_string(dir.path().join("operator.stdout")).unwrap();
    assert!(stdout.is_empty(), "the operator logs to stderr only, like the verifier; stdout had:\n{stdout}");
}
