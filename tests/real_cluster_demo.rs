//! `keyward demo --kubeconfig` on a real API server: the walkthrough's operator (in process,
//! on the demo's leaping clock) and verifier against kube-apiserver, etcd and the garbage
//! collector, in a control plane of its own (the demo's operator must be the only one).

#[path = "real_cluster/control_plane.rs"]
mod control_plane;
#[path = "real_cluster/support.rs"]
mod support;

use std::process::{Command, Output};

fn demo(kubeconfig: &std::path::Path, dump: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("demo")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--dump")
        .arg(dump)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the keyward binary runs")
}

fn token_shapes(text: &str) -> usize {
    let re = regex_lite::Regex::new(keyward::token::SCANNER_REGEX).unwrap();
    re.find_iter(text).filter(|m| keyward::token::Token::parse(m.as_str()).is_ok()).count()
}

#[test]
fn the_demo_passes_every_step_on_a_real_api_server_and_refuses_to_run_twice_in_one_namespace() {
    let plane = support::cluster();
    let dump = tempfile::tempdir().unwrap();
    let out = demo(plane.kubeconfig(), dump.path());
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the demo failed on the real API server:\n{stdout}\n{stderr}");
    assert!(stdout.contains("on the cluster of"), "{stdout}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    assert_eq!(token_shapes(&stdout) + token_shapes(&stderr), 0, "the demo printed a token");
    assert!(dump.path().join("apikey.demo.partner-orders.yaml").exists(), "the dump holds the demo's ApiKeys");

    // The ApiKeys of the first run are still there: a second run refuses to start.
    let again = demo(plane.kubeconfig(), dump.path());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && stderr.contains("already holds ApiKeys"), "{stderr}");
}
