//! The real control plane for tests: builds `tools/kube-harness` with Go (cached by Go's
//! build cache after the first, slow build), starts it once per test binary in a private
//! temporary directory on free loopback ports, and hands out clients and kubeconfigs.
//!
//! The harness holds our pipe on its standard input: when this test process exits, for
//! any reason, the pipe closes and the harness stops etcd, kube-apiserver and
//! kube-controller-manager and removes its directory. Two test binaries each start their
//! own control plane without colliding.

// Shared by two test binaries (real_cluster, real_cluster_ha), each using a part.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Deserialize;

/// What `kube-harness up` prints once /readyz answers 200.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ready {
    pub kubeconfig: PathBuf,
    pub server: String,
    pub ca_file: PathBuf,
    pub dir: PathBuf,
    /// The harness process: SIGHUP restarts kube-apiserver on the same port and data.
    pub pid: u32,
}

/// A running control plane, shared by every test of one test binary.
pub struct ControlPlane {
    pub ready: Ready,
    /// Closing this stops the harness; held for the life of the process.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The harness binary: `KEYWARD_KUBE_HARNESS` if set, else built from tools/kube-harness
/// into the target directory. `go build` is incremental; a file lock keeps two test
/// binaries from building at once.
pub fn harness_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("KEYWARD_KUBE_HARNESS") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from);
    let out_dir = target.join("kube-harness");
    std::fs::create_dir_all(&out_dir).expect("create the harness output directory");
    let lock = File::create(out_dir.join(".build.lock")).expect("create the build lock");
    lock.lock().expect("lock the harness build");
    let binary = out_dir.join("kube-harness");
    let status = Command::new("go")
        .args(["build", "-trimpath", "-buildvcs=false", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(repo_root().join("tools/kube-harness"))
        .env("CGO_ENABLED", "0")
        .status()
        .unwrap_or_else(|e| {
            panic!("the real-control-plane tests need Go 1.24 or newer on PATH to build tools/kube-harness: {e}")
        });
    assert!(status.success(), "building tools/kube-harness failed ({status}); see the output above");
    binary
}

/// The control plane of this test binary, started on first use.
pub fn shared() -> &'static ControlPlane {
    static PLANE: OnceLock<ControlPlane> = OnceLock::new();
    PLANE.get_or_init(start)
}

fn start() -> ControlPlane {
    let binary = harness_binary();
    // The harness removes this directory itself when it stops (the test process has no
    // destructor to run for a static); it is a fresh directory of our own.
    let dir = tempfile::Builder::new().prefix("keyward-cp-").tempdir().expect("a temporary directory").keep();
    let log = File::create(dir.join("harness.log")).expect("create the harness log");
    let mut child = Command::new(binary)
        .arg("up")
        .arg("--dir")
        .arg(&dir)
        .arg("--remove-dir-on-exit")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start kube-harness");
    let stdin = child.stdin.take().expect("piped stdin");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line).expect("read the harness");
    let ready: Ready = serde_json::from_str(&line).unwrap_or_else(|_| {
        let log = std::fs::read_to_string(dir.join("harness.log")).unwrap_or_default();
        let apiserver = std::fs::read_to_string(dir.join("kube-apiserver.log")).unwrap_or_default();
        let tail: String =
            apiserver.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        panic!("the control plane did not start: {line:?}\n{log}\nkube-apiserver.log (tail):\n{tail}")
    });
    ControlPlane { ready, _stdin: Mutex::new(stdin), _child: Mutex::new(child) }
}

impl ControlPlane {
    pub fn kubeconfig(&self) -> &Path {
        &self.ready.kubeconfig
    }

    /// A kubeconfig acting as ServiceAccount `namespace/name` (which must exist),
    /// authenticated by a real token from the TokenRequest API (`kubectl create token`),
    /// so RBAC sees the ServiceAccount and its groups exactly as in a Pod.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        self.service_account_kubeconfig_via(namespace, name, &self.ready.server)
    }

    /// [`Self::service_account_kubeconfig`] reaching the API server at `server` (a
    /// proxy in front of it); plain `http://` servers get no CA.
    pub fn service_account_kubeconfig_via(&self, namespace: &str, name: &str, server: &str) -> PathBuf {
        self.token_kubeconfig(namespace, name, server, None)
    }

    /// [`Self::service_account_kubeconfig`] with a token bound to Pod `(name, uid)`, as kubelet
    /// mounts it into that Pod: the API server then knows the request comes from that Pod
    /// (user extra `authentication.kubernetes.io/pod-name` and `pod-uid`).
    pub fn pod_service_account_kubeconfig(&self, namespace: &str, name: &str, pod: (&str, &str)) -> PathBuf {
        self.token_kubeconfig(namespace, name, &self.ready.server, Some(pod))
    }

    fn token_kubeconfig(&self, namespace: &str, name: &str, server: &str, pod: Option<(&str, &str)>) -> PathBuf {
        let mut command = self.kubectl();
        command.args(["create", "token", name, "-n", namespace, "--duration=24h"]);
        if let Some((pod, uid)) = pod {
            command.args(["--bound-object-kind=Pod", &format!("--bound-object-name={pod}")]);
            command.arg(format!("--bound-object-uid={uid}"));
        }
        let output = command.output().expect("run kubectl create token");
        assert!(
            output.status.success(),
            "kubectl create token {namespace}/{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        let admin_config: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&self.ready.kubeconfig).unwrap()).unwrap();
        let ca = admin_config["clusters"][0]["cluster"]["certificate-authority-data"].as_str().unwrap().to_owned();
        let ca_line = if server.starts_with("https://") {
            format!("\n    certificate-authority-data: {ca}")
        } else {
            String::new()
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: keyward-test\n  cluster:\n    server: {server}{ca_line}\n\
             users:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n- name: sa\n  \
             context:\n    cluster: keyward-test\n    user: {name}\n    namespace: {namespace}\ncurrent-context: sa\n",
        );
        let via = if server == self.ready.server { String::new() } else { format!("-via-{}", server.len()) };
        let suffix = pod.map_or(via.clone(), |(pod, _)| format!("{via}-pod-{pod}"));
        let path = self.ready.dir.join(format!("sa-{namespace}-{name}{suffix}.kubeconfig"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `kubectl` with the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new("kubectl");
        command.arg("--kubeconfig").arg(&self.ready.kubeconfig);
        command
    }
}

pub async fn client_from(kubeconfig: &Path) -> Client {
    keyward::cli::install_crypto_provider();
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig).expect("read the kubeconfig"),
        &KubeConfigOptions::default(),
    )
    .await
    .expect("a client configuration from the kubeconfig");
    Client::try_from(config).expect("a client")
}
