//! Paired latency probe: what one request costs through each setup, measured so
//! that every setup sees the same machine noise.
//!
//! Run by `bench/load.sh` (`make load`) once the setups are up:
//! `cargo bench --bench paired_latency -- NAME=127.0.0.1:PORT [NAME=HOST:PORT ...]`.
//! The first target is the baseline. One keep-alive connection per target; the
//! probe sends `GET /bench/1` with `Authorization: Bearer $KW_TOKEN` to each
//! target in turn (the order rotates every round), waits for the whole answer,
//! and times it. Interleaving request by request is the point: on a shared
//! machine a burst of noise lands on every setup alike, so the difference of
//! two setups' percentiles means something even when the percentiles
//! themselves wander. Settings: `PAIRED_REQUESTS` per target (default 50,000)
//! after `PAIRED_WARMUP` (default 2,000). The token is never printed.

// Latencies become f64 only to print them.
#![allow(clippy::cast_precision_loss)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

struct Target {
    name: String,
    stream: TcpStream,
    request: Vec<u8>,
    buffer: Vec<u8>,
    nanos: Vec<u64>,
    errors: u64,
}

fn main() {
    let specs: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let Ok(token) = std::env::var("KW_TOKEN") else {
        eprintln!("paired_latency: run by bench/load.sh (needs KW_TOKEN and NAME=HOST:PORT targets); nothing to do");
        return;
    };
    if specs.is_empty() {
        eprintln!("paired_latency: no targets given; nothing to do");
        return;
    }
    let count = setting("PAIRED_REQUESTS", 50_000);
    let warmup = setting("PAIRED_WARMUP", 2_000);
    let mut targets: Vec<Target> = specs.iter().map(|spec| connect(spec, &token)).collect();
    for round in 0..warmup + count {
        let n = targets.len();
        for k in 0..n {
            let target = &mut targets[(round + k) % n];
            let started = Instant::now();
            let ok = exchange(target);
            let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            if !ok {
                target.errors += 1;
                // A broken connection is reopened so one failure does not end the probe.
                target.stream = open(&target.name, address(&specs, &target.name));
            } else if round >= warmup {
                target.nanos.push(nanos);
            }
        }
    }
    report(&mut targets, count);
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn address<'a>(specs: &'a [String], name: &str) -> &'a str {
    specs.iter().find_map(|s| s.split_once('=').filter(|(n, _)| *n == name).map(|(_, a)| a)).unwrap_or_default()
}

fn open(name: &str, address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap_or_else(|err| panic!("{name}: connecting to {address}: {err}"));
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    stream
}

fn connect(spec: &str, token: &str) -> Target {
    let (name, address) = spec.split_once('=').unwrap_or_else(|| panic!("target {spec:?} is not NAME=HOST:PORT"));
    let request =
        format!("GET /bench/1 HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\r\n").into_bytes();
    Target {
        name: name.to_owned(),
        stream: open(name, address),
        request,
        buffer: Vec::with_capacity(4096),
        nanos: Vec::new(),
        errors: 0,
    }
}

/// Send one request and read the whole answer; true when it was a 200 and the connection stays usable.
fn exchange(target: &mut Target) -> bool {
    if target.stream.write_all(&target.request).is_err() {
        return false;
    }
    target.buffer.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = find(&target.buffer, b"\r\n\r\n") {
            break end + 4;
        }
        match target.stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => target.buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&target.buffer[..head_end]).to_ascii_lowercase();
    let Some(length) =
        head.lines().find_map(|line| line.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok())
    else {
        return false;
    };
    while target.buffer.len() < head_end + length {
        match target.stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => target.buffer.extend_from_slice(&chunk[..n]),
        }
    }
    head.starts_with("http/1.1 200")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let index = (rank as usize).min(sorted.len()) - 1;
    sorted[index] as f64 / 1000.0
}

fn report(targets: &mut [Target], count: usize) {
    const POINTS: [f64; 4] = [50.0, 90.0, 99.0, 99.9];
    for t in targets.iter_mut() {
        t.nanos.sort_unstable();
    }
    println!("one keep-alive connection per setup, requests interleaved; {count} timed requests each (µs):");
    println!();
    println!("| setup | p50 | p90 | p99 | p99.9 | errors |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for t in targets.iter() {
        let cells: Vec<String> = POINTS.iter().map(|p| format!("{:.1}", percentile(&t.nanos, *p))).collect();
        println!("| {} | {} | {} |", t.name, cells.join(" | "), t.errors);
    }
    println!();
    let Some((base, rest)) = targets.split_first() else { return };
    for t in rest {
        let added: Vec<String> = POINTS
            .iter()
            .map(|p| format!("p{p}: {:+.1}", percentile(&t.nanos, *p) - percentile(&base.nanos, *p)))
            .collect();
        println!("- {} adds over {} (µs): {}", t.name, base.name, added.join(", "));
    }
}
