//! The `keyward verifier` binary: starts from flags, answers, logs JSON without tokens, and stops cleanly on SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// One HTTP/1.1 request with `Connection: close`; the whole answer as text.
fn http(addr: SocketAddr, head: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(format!("{head}Host: test\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}

#[test]
fn the_binary_serves_forward_auth_and_exits_cleanly_on_sigterm() {
    let (reader, stranger) = (token(1), token(2));
    let mut dir = KubeletDir::new();
    dir.publish_set("default", 1, &[record(&reader, &["leads:read"])]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["verifier", "--keyset-dir"])
        .arg(&dir.path)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "keyward=trace,info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain stderr on a thread of its own: a full pipe would block the verifier's logging.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (lines, received) = std::sync::mpsc::channel::<String>();
    let drain = std::thread::spawn(move || {
        for line in stderr.lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut logs = String::new();
    let (addr, admin): (SocketAddr, SocketAddr) = loop {
        let line =
            received.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}; logs so far:\n{logs}"));
        logs.push_str(&line);
        logs.push('\n');
        if line.contains("verifier listening") {
            let json: serde_json::Value = serde_json::from_str(&line).unwrap();
            let field = |name: &str| json["fields"][name].as_str().unwrap().parse().unwrap();
            break (field("addr"), field("admin_addr"));
        }
    };
    let mut ready = false;
    for _ in 0..1000 {
        if http(admin, "GET /readyz HTTP/1.1\r\n").starts_with("HTTP/1.1 200") {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(ready, "not ready within 10 s");
    let ask = |t: &keyward::token::Token| {
        http(
            addr,
            &format!(
                "GET /verify HTTP/1.1\r\nX-Original-Method: GET\r\nX-Original-URI: /leads\r\nAuthorization: Bearer {}\r\n",
                t.expose()
            ),
        )
    };
    assert!(ask(&reader).starts_with("HTTP/1.1 200"));
    assert!(ask(&stranger).starts_with("HTTP/1.1 401"));

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut exit = None;
    for _ in 0..2000 {
        exit = child.try_wait().unwrap();
        if exit.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let Some(exit) = exit else {
        let _ = child.kill();
        panic!("still running 20 s after SIGTERM; logs:\n{logs}");
    };
    drain.join().unwrap();
    for line in received.try_iter() {
        logs.push_str(&line);
        logs.push('\n');
    }
    assert!(exit.success(), "exit {exit:?}; logs:\n{logs}");
    assert!(logs.contains("shutting down") && logs.contains("\"decision\""), "logs:\n{logs}");
    for t in [&reader, &stranger] {
        assert!(!logs.contains(&t.expose()[3..]), "a token reached the logs:\n{logs}");
    }
}

#[test]
fn the_key_set_source_is_either_directories_or_the_api_and_bad_flags_are_refused() {
    let dir = KubeletDir::new();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "--keyset-dir"),
        (
            vec![
                "--keyset-dir".into(),
                dir.path.display().to_string(),
                "--watch-keyset".into(),
                "team-a/default".into(),
            ],
            "cannot be used with",
        ),
        (vec!["--watch-keyset".into(), "no-slash".into()], "NAMESPACE/NAME"),
        (vec!["--watch-keyset".into(), "Team/x".into()], "NAMESPACE/NAME"),
        (
            vec![
                "--keyset-dir".into(),
                dir.path.display().to_string(),
                "--routes".into(),
                dir.path.join("none.yaml").display().to_string(),
            ],
            "none.yaml",
        ),
        (
            vec!["--keyset-dir".into(), dir.path.display().to_string(), "--upstream".into(), "https://app:8443".into()],
            "upstream must be http://",
        ),
        // No kubeconfig and not in a pod: the API cannot be reached, and the verifier says so.
        (vec!["--watch-keyset".into(), "team-a/default".into()], "Kubernetes API"),
    ];
    for (args, expected) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .arg("verifier")
            .args(&args)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env("KUBECONFIG", dir.path.join("no-such-kubeconfig"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(expected), "{args:?}: expected {expected:?} in:\n{stderr}");
    }
}
