//! What the real-cluster tests share: the CRD installed once, the operator's
//! manifests applied once, `kubectl` runs, polling, and reading key sets.

// Shared by several test binaries (real_cluster, real_cluster_ha, ...), each using a part.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::ConfigMap;
use keyward::api::ApiKey;
use keyward::keyset::{Record, decode_shard};
use kube::api::ListParams;
use kube::{Api, Client};

use super::control_plane::{self, ControlPlane};

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs a command to completion and fails the test, showing its output, unless it succeeds.
pub fn run_ok(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    assert!(output.status.success(), "{command:?} failed: {}", describe(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `kubectl apply -f -` of `yaml` as the admin.
pub fn apply(plane: &ControlPlane, namespace: &str, yaml: &str) -> Output {
    let mut child = plane
        .kubectl()
        .args(["apply", "--server-side", "--field-manager=test-user", "-n", namespace, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), yaml.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

pub fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The control plane with the ApiKey, ApiKeyWebhook, ApiKeyClass, KeySet and ClusterApiKey CRDs installed and Established (once per binary).
pub fn cluster() -> &'static ControlPlane {
    static CRD: OnceLock<()> = OnceLock::new();
    let plane = control_plane::shared();
    CRD.get_or_init(|| {
        install_crd(plane, "crds/apikey.yaml", "apikeys.keyward.dev");
        install_crd(plane, "crds/apikeywebhook.yaml", "apikeywebhooks.keyward.dev");
        install_crd(plane, "crds/apikeyclass.yaml", "apikeyclasses.keyward.dev");
        install_crd(plane, "crds/keyset.yaml", "keysets.keyward.dev");
        install_crd(plane, "crds/clusterapikey.yaml", "clusterapikeys.keyward.dev");
    });
    plane
}

/// `kubectl apply` the CRD in `file` and wait until the API server has Established `name`.
pub fn install_crd(plane: &ControlPlane, file: &str, name: &str) {
    run_ok(plane.kubectl().args(["apply", "--server-side", "-f"]).arg(repo(file)));
    run_ok(plane.kubectl().args(["wait", "--for=condition=Established", &format!("crd/{name}"), "--timeout=60s"]));
}

/// `cluster()` plus `kubectl apply -k manifests/` (namespace, ServiceAccount, RBAC,
/// Deployment; no kubelet runs its Pods): the operator's RBAC as shipped.
pub fn cluster_with_manifests() -> &'static ControlPlane {
    static MANIFESTS: OnceLock<()> = OnceLock::new();
    let plane = cluster();
    MANIFESTS.get_or_init(|| {
        run_ok(plane.kubectl().args(["apply", "-k"]).arg(repo("manifests")));
    });
    plane
}

// Not every test binary that includes this file waits for anything.
#[allow(unused_imports)]
pub use keyward_testkit::wait::eventually;

/// Every record of the key set `key_set` in `namespace`, from its ConfigMap shards.
pub async fn records(client: &Client, namespace: &str, key_set: &str) -> Vec<Record> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let shards = maps.list(&ListParams::default().labels(&format!("keyward.dev/keyset={key_set}"))).await.unwrap();
    let mut records = Vec::new();
    for map in shards.items {
        let texts = map.data.unwrap_or_default().into_values().map(String::into_bytes);
        let binaries = map.binary_data.unwrap_or_default().into_values().map(|b| b.0);
        for bytes in texts.chain(binaries) {
            records.extend(decode_shard(&bytes).expect("a published shard decodes").records);
        }
    }
    records
}

pub fn is_ready(key: &ApiKey) -> bool {
    key.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
            && s.observed_generation == key.metadata.generation
    })
}

/// A child process tied to this test process: its stdin is our pipe, and a small shell
/// wrapper sends SIGTERM to the program when the pipe closes, so nothing outlives a test
/// run that dies. Dropping it stops the program too.
pub struct Tethered {
    pub pid: u32,
    stdin: Option<ChildStdin>,
    child: Child,
    pub log: PathBuf,
}

impl Tethered {
    pub fn spawn(program: &Path, args: &[String], envs: &[(&str, &Path)], log: PathBuf) -> Self {
        let log_file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(r#""$@" </dev/null & c=$!; echo $c; while read -r _; do :; done; kill -TERM $c 2>/dev/null; wait $c"#)
            .arg("sh")
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file.try_clone().unwrap());
        for (name, value) in envs {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line).unwrap();
        let pid = line.trim().parse().expect("the wrapper prints the program's pid");
        // The program's own stdout goes to the log as well, after the pid line.
        let mut out = child.stdout.take().unwrap();
        let mut sink = log_file;
        std::thread::spawn(move || std::io::copy(&mut out, &mut sink));
        Self { pid, stdin: child.stdin.take(), child, log }
    }

    /// SIGKILL, as a node failure or the OOM killer would.
    pub fn kill_hard(&self) {
        let _ = Command::new("kill").args(["-KILL", &self.pid.to_string()]).status();
    }

    /// Whether the program still runs. One that exited stays a zombie of its wrapper
    /// (which reaps it only when stopped), so the process state is read, not `kill -0`.
    pub fn is_running(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // pid (comm) STATE ...: comm may hold spaces, so read after its closing parenthesis.
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
        state.is_some_and(|s| s != "Z" && s != "X")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tethered {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `keyward operator` as the ServiceAccount of manifests/, with fast test timings.
pub fn start_operator(plane: &ControlPlane, identity: &str, dir: &Path) -> Tethered {
    let kubeconfig = plane.service_account_kubeconfig("keyward-system", "keyward-operator");
    start_operator_with(&kubeconfig, identity, dir)
}

/// [`start_operator`] with a kubeconfig of the caller's (for example through a proxy).
pub fn start_operator_with(kubeconfig: &Path, identity: &str, dir: &Path) -> Tethered {
    start_operator_flags(kubeconfig, identity, dir, &[])
}

/// [`start_operator_with`], each `(flag, value)` of `flags` replacing the test timing of that flag
/// (or added when it has none).
pub fn start_operator_flags(kubeconfig: &Path, identity: &str, dir: &Path, flags: &[(&str, &str)]) -> Tethered {
    let mut args: Vec<String> = [
        "operator",
        "--admin-listen",
        &format!("127.0.0.1:{}", free_port()),
        "--propagation-delay",
        "1s",
        "--publish-poll",
        "300ms",
        "--identity",
        identity,
        "--lease-namespace",
        "keyward-system",
        "--lease-duration",
        "6s",
        "--renew-deadline",
        "4s",
        "--retry-period",
        "1s",
        // Usage added up every 2 s and written at once, so tests need not wait minutes.
        "--usage-aggregate-interval",
        "2s",
        "--usage-status-interval",
        "1s",
        // Webhook retries and status writes in fractions of a second.
        "--webhook-retry-base",
        "200ms",
        "--webhook-status-interval",
        "1s",
        "--log",
        "info",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    for (flag, value) in flags {
        match args.iter().position(|a| a == flag) {
            Some(at) => (*value).clone_into(&mut args[at + 1]),
            None => args.extend([(*flag).to_owned(), (*value).to_owned()]),
        }
    }
    Tethered::spawn(
        Path::new(env!("CARGO_BIN_EXE_keyward")),
        &args,
        &[("KUBECONFIG", kubeconfig)],
        dir.join(format!("operator-{identity}.log")),
    )
}

/// A signing Secret `hook-signing` holding `secret`, an ApiKeyWebhook `alerts` for Revoked notices
/// to `url`, and an ApiKey `partner`, as one YAML stream for `kubectl apply`.
pub fn webhook_and_key_yaml(url: &str, secret: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: hook-signing}}\nstringData: {{secret: {secret}}}\n---\n\
         apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyWebhook\nmetadata: {{name: alerts}}\n\
         spec: {{url: '{url}', secretRef: {{name: hook-signing}}, events: [Revoked]}}\n---\n\
         apiVersion: keyward.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: partner}}\nspec: {{scopes: [orders:read]}}\n"
    )
}

/// `keyward verifier --watch-keyset NAMESPACE/default` as the ServiceAccount and Role that
/// examples/workloads/verifier-watch-rbac.yaml ships (applied here into `namespace`),
/// and the address it serves forward-auth requests on.
pub fn start_watch_verifier(plane: &ControlPlane, namespace: &str) -> (Tethered, std::net::SocketAddr) {
    start_watch_verifier_with(plane, namespace, &[], &[])
}

/// [`start_watch_verifier`] with more arguments and environment (a Pod's downward-API variables).
pub fn start_watch_verifier_with(
    plane: &ControlPlane,
    namespace: &str,
    extra_args: &[&str],
    extra_env: &[(&str, &Path)],
) -> (Tethered, std::net::SocketAddr) {
    run_ok(
        plane.kubectl().args(["apply", "-n", namespace, "-f"]).arg(repo("examples/workloads/verifier-watch-rbac.yaml")),
    );
    let kubeconfig = plane.service_account_kubeconfig(namespace, "keyward-verifier");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let args: Vec<String> = vec![
        "verifier".to_owned(),
        "--watch-keyset".to_owned(),
        format!("{namespace}/default"),
        "--listen".to_owned(),
        addr.to_string(),
        "--admin-listen".to_owned(),
        format!("127.0.0.1:{}", free_port()),
    ];
    let args: Vec<String> = args.into_iter().chain(extra_args.iter().map(ToString::to_string)).collect();
    let mut env = vec![("KUBECONFIG", kubeconfig.as_path())];
    env.extend_from_slice(extra_env);
    let verifier = Tethered::spawn(
        Path::new(env!("CARGO_BIN_EXE_keyward")),
        &args,
        &env,
        plane.ready.dir.join(format!("verifier-{namespace}.log")),
    );
    (verifier, addr)
}

/// One forward-auth request (`GET /orders/1`) to a verifier; the status code it answers.
pub async fn verify(addr: std::net::SocketAddr, token: &keyward::token::Token) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!(
        "GET /verify HTTP/1.1\r\nHost: verifier\r\nAuthorization: Bearer {}\r\nX-Original-Method: GET\r\n\
         X-Original-URI: /orders/1\r\nConnection: close\r\n\r\n",
        token.expose()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.ok()?;
    String::from_utf8_lossy(&answer).split_whitespace().nth(1)?.parse().ok()
}
