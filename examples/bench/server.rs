//! One notary under test: a fresh `notary init` set-up, tuned for load from
//! one address, and the release `notary serve` on it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a set-up differs by.
#[derive(Debug, Clone, Default)]
pub struct SetUp {
    /// `--alg` of `notary init`: the Notary (access token) key.
    pub alg: String,
    /// A PostgreSQL URL; SQLite in the set-up's directory when `None`.
    pub database: Option<String>,
    /// Passed on to `notary init` (e.g. a TPM's `--token`).
    pub init_args: Vec<String>,
    /// `hsm.sessions`, when set.
    pub sessions: Option<i64>,
}

/// A running notary. Stopped when dropped.
pub struct Server {
    _dir: tempfile::TempDir,
    pub base: String,
    pub ca: Vec<u8>,
    pub admin_key: String,
    pub start_to_ready_ms: f64,
    /// The plain-HTTP `/metrics` address.
    pub metrics: String,
    child: Child,
}

impl Server {
    /// Creates the set-up; `before_start` runs on its configuration before
    /// the server starts (the HSM figures are taken there, with the module
    /// not yet in use by the server).
    pub async fn start(setup: &SetUp, before_start: impl FnOnce(&Path)) -> Server {
        let bin = notary_binary();
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("notary");
        let (port, metrics_port) = (free_port(), free_port());
        let mut init = Command::new(&bin);
        init.args(["init", "--dir", home.to_str().unwrap(), "--alg", &setup.alg])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")]);
        if let Some(db) = &setup.database {
            init.args(["--database", db]);
        }
        init.args(&setup.init_args);
        let out = init.output().unwrap();
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = home.join("notary.toml");
        tune_for_load(&config, setup.sessions);
        before_start(&config);

        let ca = std::fs::read(home.join("tls/cert.pem")).unwrap();
        let base = format!("https://localhost:{port}");
        let probe = super::client(&ca);
        // The first TLS handshake in a process seeds aws-lc's random
        // generator from CPU jitter (about 60 ms here): pay it in this
        // process before the clock starts, so the figure is the server's
        // start-up alone.
        aws_lc_rs::rand::fill(&mut [0u8; 16]).unwrap();
        let started = Instant::now();
        let child = serve_until_ready(&config, &probe, &base).await;
        let start_to_ready_ms = started.elapsed().as_secs_f64() * 1e3;
        let admin_key = std::fs::read_to_string(home.join("admin-key"))
            .unwrap()
            .trim()
            .to_owned();
        Server {
            _dir: dir,
            base,
            ca,
            admin_key,
            start_to_ready_ms,
            metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A second `notary serve` on this set-up's configuration (the same
    /// HSM token and database), on ports of its own.
    pub async fn another_instance(&self) -> Instance {
        let home = self._dir.path().join("notary");
        let mut table: toml::Table = std::fs::read_to_string(home.join("notary.toml"))
            .unwrap()
            .parse()
            .unwrap();
        let (port, metrics_port) = (free_port(), free_port());
        table["server"]["listen"] = toml::Value::String(format!("127.0.0.1:{port}"));
        table["metrics"]["listen"] = toml::Value::String(format!("127.0.0.1:{metrics_port}"));
        let config = home.join(format!("notary-{port}.toml"));
        std::fs::write(&config, toml::to_string(&table).unwrap()).unwrap();
        let base = format!("https://localhost:{port}");
        let child = serve_until_ready(&config, &super::client(&self.ca), &base).await;
        Instance { base, child }
    }

    /// `VmHWM` and `VmRSS` of the server, in KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib = |field: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
                .unwrap_or(0)
        };
        (kib("VmHWM:"), kib("VmRSS:"))
    }
}

/// Sums over the server's threads of their context switches
/// (voluntary and involuntary) so far.
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Bytes the server has handed to `write` calls so far (`wchar` of
/// `/proc/PID/io`): for notary, mostly the SQLite WAL and the TLS records.
pub fn bytes_written(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The machine's idle and total CPU ticks so far (`/proc/stat`).
pub fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (idle, fields.iter().sum())
}

/// The `Environment=` settings of the packaged systemd unit, so the server
/// measured runs as the unit runs it (the allocator's tunables among them).
fn unit_environment() -> Vec<(String, String)> {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/notary.service");
    let unit = std::fs::read_to_string(&unit).expect("systemd/notary.service");
    unit.lines()
        .filter_map(|line| line.strip_prefix("Environment="))
        .filter_map(|setting| setting.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// Starts `notary serve` on `config` (with the unit's environment) and waits (up to 30 s) until `base`
/// answers `/readyz` with 200.
async fn serve_until_ready(config: &Path, probe: &reqwest::Client, base: &str) -> Child {
    let child = Command::new(notary_binary())
        .args(["serve", "--config", config.to_str().unwrap()])
        .envs(unit_environment())
        .env("NOTARY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !matches!(probe.get(format!("{base}/readyz")).send().await, Ok(r) if r.status() == 200) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server not ready"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    child
}

/// A further instance of a [`Server`]'s set-up; stopped when dropped.
pub struct Instance {
    pub base: String,
    child: Child,
}

impl Instance {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Every redemption is a fresh, valid code, all from one address: the
/// failure budget is lifted only so that a mistake in the benchmark cannot
/// trip it silently (successes spend nothing, but requests in flight hold
/// a unit), and so is the per-address connection cap. Status lists are
/// re-signed every second, so the revocation-to-served figure is the
/// signer's interval plus the work, not a 60 s wait.
fn tune_for_load(config: &Path, sessions: Option<i64>) {
    let mut table: toml::Table = std::fs::read_to_string(config).unwrap().parse().unwrap();
    let mut set = |section: &str, key: &str, value: toml::Value| {
        table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap()
            .insert(key.into(), value);
    };
    set("flood", "max_failures", 1_000_000.into());
    set("server", "max_connections_per_address", 100_000.into());
    set("status", "sign_interval_secs", 1.into());
    if let Some(sessions) = sessions {
        set("hsm", "sessions", sessions.into());
    }
    std::fs::write(config, toml::to_string(&table).unwrap()).unwrap();
}

/// The release `notary` next to this example.
pub fn notary_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("notary");
    assert!(
        bin.exists(),
        "build the server first: cargo build --release --bin notary"
    );
    bin
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
