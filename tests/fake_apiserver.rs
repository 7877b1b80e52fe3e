//! The in-memory API served over loopback HTTP (`keyward fake-apiserver`), driven by a real
//! `kube::Client` built from the kubeconfig the server writes: what the operator bench and people
//! trying `keyward operator` rely on.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use keyward::api::ApiKey;
use keyward::demo::apiserver::serve;
use keyward_testkit::fakeapi::server::{Writes, cluster, kubeconfig};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;

async fn start() -> (Client, Arc<Writes>, tokio::sync::oneshot::Sender<()>) {
    keyward::cli::install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let writes = Arc::new(Writes::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, cluster().await.unwrap(), writes.clone(), async move {
        let _ = stopped.await;
    }));
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&kubeconfig(addr)).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(config.cluster_url.to_string(), format!("http://{addr}/"));
    (Client::try_from(config).unwrap(), writes, stop)
}

fn apikey(name: &str) -> ApiKey {
    serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1",
        "kind": "ApiKey",
        "metadata": {"name": name},
        "spec": {"scopes": ["orders:read"]},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kube_client_creates_applies_patches_lists_and_watches_over_http() {
    let (client, writes, _stop) = start().await;
    keyward::controller::check_crd(&client).await.expect("the CRD is installed");
    let keys: Api<ApiKey> = Api::namespaced(client.clone(), "team-a");

    // A watch opened first sees what follows.
    let mut events = watcher(keys.clone(), watcher::Config::default()).boxed();
    assert!(matches!(events.try_next().await.unwrap(), Some(watcher::Event::Init)));
    assert!(matches!(events.try_next().await.unwrap(), Some(watcher::Event::InitDone)));

    keys.create(&PostParams::default(), &apikey("crm")).await.unwrap();
    let applied = keys
        .patch(
            "crm",
            &PatchParams::apply("keyward-test").force(),
            &Patch::Apply(json!({
                "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKey",
                "metadata": {"name": "crm", "labels": {"team": "a"}},
            })),
        )
        .await
        .unwrap();
    assert_eq!(applied.metadata.labels.unwrap().get("team").map(String::as_str), Some("a"));
    keys.patch_status("crm", &PatchParams::default(), &Patch::Merge(json!({"status": {"state": "Active"}})))
        .await
        .unwrap();

    let seen = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(event) = events.try_next().await.unwrap() {
            if let watcher::Event::Apply(key) = event
                && key.status.as_ref().and_then(|s| s.state.as_ref()).is_some()
            {
                return key;
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("the status patch is watched within a minute");
    assert_eq!(seen.metadata.name.as_deref(), Some("crm"));

    // Lists page as asked, in name order, without losing or repeating anyone.
    for i in 0..5 {
        keys.create(&PostParams::default(), &apikey(&format!("k{i}"))).await.unwrap();
    }
    let first = keys.list(&ListParams::default().limit(4)).await.unwrap();
    assert_eq!(first.items.len(), 4);
    let token = first.metadata.continue_.clone().expect("more to come");
    let rest = keys.list(&ListParams::default().limit(4).continue_token(&token)).await.unwrap();
    let names: Vec<String> = first.items.iter().chain(&rest.items).map(|k| k.metadata.name.clone().unwrap()).collect();
    assert_eq!(names, ["crm", "k0", "k1", "k2", "k3", "k4"]);
    assert!(rest.metadata.continue_.is_none());

    // Metadata-only lists carry no data.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "team-a");
    let mut secret = Secret::default();
    secret.metadata.name = Some("s".into());
    secret.string_data = Some([("token".to_owned(), "x".to_owned())].into());
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let meta = secrets.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(meta.items.len(), 1);
    assert_eq!(meta.items[0].metadata.name.as_deref(), Some("s"));

    let counted = writes.snapshot();
    assert_eq!(counted.get("POST apikeys"), Some(&6));
    assert_eq!(counted.get("PATCH apikeys"), Some(&1));
    assert_eq!(counted.get("PATCH apikeys/status"), Some(&1));
    assert_eq!(counted.get("POST secrets"), Some(&1));
}

/// `keyward fake-apiserver` as a user starts it, with the kubeconfig it writes.
struct Served {
    child: std::process::Child,
    kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Served {
    fn start() -> Served {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["fake-apiserver", "--listen", "localhost:0", "--kubeconfig-out"])
            .arg(&kubeconfig)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert!(line.starts_with("keyward fake-apiserver listening on http://127.0.0.1:"), "{line}");
        Served { child, kubeconfig, _dir: dir }
    }

    /// `kubectl ARGS` with `stdin`: whether it succeeded, and its stdout and stderr together.
    fn kubectl(&self, args: &[&str], stdin: &str) -> (bool, String) {
        let mut child = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl on PATH");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    }

    fn kubectl_ok(&self, args: &[&str], stdin: &str) -> String {
        let (ok, text) = self.kubectl(args, stdin);
        assert!(ok, "kubectl {args:?} failed: {text}");
        text
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CRM: &str = "apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: crm, namespace: team-a}\nspec: {scopes: [orders:read]}\n";

#[test]
fn kubectl_discovers_applies_gets_and_deletes_api_keys_on_the_fake_apiserver() {
    let served = Served::start();
    served.kubectl_ok(&["apply", "-f", "-"], "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n");
    let resources = served.kubectl_ok(&["api-resources", "--api-group=keyward.dev"], "");
    let rows: Vec<Vec<&str>> = resources.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        [
            ["apikeyclasses", "akc", "keyward.dev/v1alpha1", "false", "ApiKeyClass"],
            ["apikeys", "ak", "keyward.dev/v1alpha1", "true", "ApiKey"],
            ["apikeywebhooks", "akwh", "keyward.dev/v1alpha1", "true", "ApiKeyWebhook"],
            ["clusterapikeys", "cak", "keyward.dev/v1alpha1", "false", "ClusterApiKey"],
            ["keysets", "ks", "keyward.dev/v1alpha1", "true", "KeySet"]
        ],
        "{resources}"
    );

    assert!(served.kubectl_ok(&["apply", "-f", "-"], CRM).contains("apikey.keyward.dev/crm created"));
    let applied = served.kubectl_ok(&["apply", "--server-side", "-f", "-"], &CRM.replace("crm", "partner"));
    assert!(applied.contains("serverside-applied"), "{applied}");

    // The columns the real API server shows (tests/real_cluster/install.rs), from the server-side Table.
    let listed = served.kubectl_ok(&["get", "apikeys", "-n", "team-a"], "");
    let header: Vec<&str> = listed.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header.join(" "), "NAME STATE PREFIX CLASS SCOPES EXPIRES NEXT ROTATION LAST USED AGE", "{listed}");
    assert!(listed.contains("[\"orders:read\"]"), "{listed}");
    assert_eq!(served.kubectl_ok(&["get", "ak", "-n", "team-a", "-o", "name"], "").lines().count(), 2);
    let category = served.kubectl_ok(&["get", "keyward", "-n", "team-a", "-o", "name"], "");
    assert!(category.contains("apikey.keyward.dev/crm"), "{category}");

    // Refused as the API server refuses it, naming the field.
    let (ok, refused) = served.kubectl(&["apply", "-f", "-"], &CRM.replace("orders:read", "not-a-scope"));
    assert!(!ok && refused.contains("is invalid") && refused.contains("spec.scopes[0]"), "{refused}");
    // Unknown resources and paths are 404s, not 500s.
    let (ok, unknown) = served.kubectl(&["get", "nonsense"], "");
    assert!(!ok && unknown.contains("doesn't have a resource type"), "{unknown}");
    let (ok, raw) = served.kubectl(&["get", "--raw", "/nonsense"], "");
    assert!(!ok && raw.contains("NotFound"), "{raw}");

    served.kubectl_ok(&["delete", "apikey", "crm", "-n", "team-a"], "");
    let (ok, gone) = served.kubectl(&["get", "apikey", "crm", "-n", "team-a"], "");
    assert!(!ok && gone.contains("NotFound"), "{gone}");
}

/// The ClusterApiKey controller's Namespace watch (metadata only, from a list): existing
/// namespaces arrive at init, then a label change, filtered by the label selector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_watch_of_namespaces_sees_existing_ones_then_label_changes() {
    use k8s_openapi::api::core::v1::Namespace;
    let (client, _writes, _stop) = start().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let create = |name: &str, agency: &str| {
        serde_json::from_value::<Namespace>(json!({"metadata": {"name": name, "labels": {"agency": agency}}})).unwrap()
    };
    namespaces.create(&PostParams::default(), &create("north", "acme")).await.unwrap();
    namespaces.create(&PostParams::default(), &create("west", "other")).await.unwrap();

    let config = watcher::Config::default().labels("agency=acme");
    let mut events = watcher(Api::<kube::core::PartialObjectMeta<Namespace>>::all(client.clone()), config).boxed();
    let mut initial = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(60), events.try_next()).await.unwrap().unwrap() {
            Some(watcher::Event::InitApply(ns)) => initial.push(ns.metadata.name.unwrap()),
            Some(watcher::Event::InitDone) => break,
            Some(_) => {}
            None => panic!("watch ended"),
        }
    }
    assert_eq!(initial, ["north"]);

    let relabel = json!({"metadata": {"labels": {"agency": "acme"}}});
    namespaces.patch("west", &PatchParams::default(), &Patch::Merge(relabel)).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(watcher::Event::Apply(ns)) = events.try_next().await.unwrap() {
                return ns.metadata.name.unwrap();
            }
        }
    })
    .await
    .expect("the label change is watched within a minute");
    assert_eq!(seen, "west");
}
