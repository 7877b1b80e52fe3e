//! Child processes and what /proc says about them: guards that stop children, peak RSS,
//! CPU seconds, a harness's children, and one-shot loopback HTTP.

use std::process::Child;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A child stopped when this value is dropped: SIGTERM, then SIGKILL after 10 s.
pub struct Guard(pub Child);

impl Guard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = std::process::Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A figure of /proc/PID/status (KiB for memory fields); 0 when unreadable.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The fields of /proc/PID/stat after the command name (field 3, the state, is index 0).
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().map(str::to_owned).collect()).unwrap_or_default()
}

/// User plus system CPU seconds of a process (all its threads) so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let fields = stat_fields(pid);
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The child of `parent` whose first argument is `subcommand` (the harness runs each
/// component as `kube-harness kube-apiserver ...`).
pub fn child_running(parent: u32, subcommand: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let candidate: u32 = entry.file_name().to_str()?.parse().ok()?;
        let its_parent: u32 = stat_fields(candidate).get(1)?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{candidate}/cmdline")).ok()?;
        let first = cmdline.split(|b| *b == 0).nth(1)?;
        (its_parent == parent && first == subcommand.as_bytes()).then_some(candidate)
    })
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A count from the environment variable `name`, `default` when unset, bounded to 1..=`max`.
pub fn env_count(name: &str, default: usize, max: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default).clamp(1, max)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One request over a fresh loopback connection: (status code, body).
pub async fn http(addr: &str, head: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(head.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((code, body.to_owned()))
}

pub async fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    http(addr, &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")).await
}

/// Polls `check` every `every` until it returns `Some`, or fails naming `what` after `limit`.
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, every: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if started.elapsed() > limit {
            return Err(format!("{what}: not within {limit:?}"));
        }
        tokio::time::sleep(every).await;
    }
}

/// A bench's `main`: `bench` runs on a two-thread runtime with a temporary directory of its
/// own, stopped after `deadline` or by Ctrl-C; its children are stopped by their guards inside
/// it, before the directory goes. Exits 1, saying why, when the harness is missing or it fails.
pub fn run_bench<F, Fut>(name: &str, harness: &std::path::Path, deadline: Duration, bench: F)
where
    F: FnOnce(std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    if !harness.is_file() {
        eprintln!("{name}: no control plane at {}; run `make harness` first", harness.display());
        std::process::exit(1);
    }
    let dir = tempfile::Builder::new().prefix(&format!("keyward-{name}-")).tempdir().expect("a temporary directory");
    keyward::cli::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = tokio::time::timeout(deadline, bench(dir.path().to_path_buf())) => {
                outcome.unwrap_or_else(|_| Err(format!("not done within {deadline:?}")))
            }
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
        }
    });
    drop(runtime);
    drop(dir);
    if let Err(e) = outcome {
        eprintln!("{name} failed: {e}");
        std::process::exit(1);
    }
}
