//! `TestApp`: a real `notary` (the built binary) on a temporary SoftHSM2
//! token, a temporary database (SQLite, or its own PostgreSQL database when
//! `NOTARY_TEST_BACKEND=postgres`) and a self-signed TLS certificate,
//! started on a free loopback port and stopped on drop.

use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

pub const GRANT: &str = "urn:ietf:params:oauth:grant-type:pre-authorized_code";
pub const BIN: &str = env!("CARGO_BIN_EXE_notary");

/// Builds a `TestApp`.
pub struct Builder {
    force_postgres: bool,
    sqlite_file: Option<PathBuf>,
    envs: Vec<(String, String)>,
    binary: PathBuf,
    log_level: &'static str,
    alg: &'static str,
    init_args: Vec<String>,
    edits: Vec<(&'static str, &'static str, toml::Value)>,
}

pub fn builder() -> Builder {
    Builder {
        force_postgres: false,
        sqlite_file: None,
        envs: Vec::new(),
        binary: PathBuf::from(BIN),
        log_level: "debug",
        alg: "EdDSA",
        init_args: Vec::new(),
        edits: Vec::new(),
    }
}

impl Builder {
    /// Serves with another build of notary (e.g. the unwiped control).
    pub fn binary(mut self, path: PathBuf) -> Self {
        self.binary = path;
        self
    }

    /// Uses a fresh PostgreSQL database whatever the run's backend.
    pub fn postgres(mut self) -> Self {
        self.force_postgres = true;
        self
    }

    /// Keeps the SQLite database at `path` (e.g. on a small tmpfs).
    pub fn sqlite_file(mut self, path: &Path) -> Self {
        self.sqlite_file = Some(path.to_owned());
        self
    }

    /// An environment variable for the server process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The server's `NOTARY_LOG` filter.
    pub fn log_level(mut self, level: &'static str) -> Self {
        self.log_level = level;
        self
    }

    /// Further arguments for `notary init` (e.g. `--audit-alg ES256`).
    pub fn init_args(mut self, args: &[&str]) -> Self {
        self.init_args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    pub fn alg(mut self, alg: &'static str) -> Self {
        self.alg = alg;
        self
    }

    /// Sets `[section] key = value` in notary.toml before the server starts.
    pub fn set(
        mut self,
        section: &'static str,
        key: &'static str,
        value: impl Into<toml::Value>,
    ) -> Self {
        self.edits.push((section, key, value.into()));
        self
    }

    pub async fn start(self) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let metrics_port = free_port();
        let home = dir.path().join("notary");
        let database = if self.force_postgres {
            Some(new_postgres_database())
        } else if let Some(file) = &self.sqlite_file {
            Some(format!("sqlite:{}", file.display()))
        } else {
            fresh_database()
        };
        let listen = format!("127.0.0.1:{port}");
        let metrics_listen = format!("127.0.0.1:{metrics_port}");
        let mut init = vec![
            "init",
            "--database",
            database.as_deref().unwrap_or("sqlite:notary.db"),
            "--dir",
            home.to_str().unwrap(),
            "--listen",
            &listen,
            "--alg",
            self.alg,
            "--metrics-listen",
            &metrics_listen,
        ];
        init.extend(self.init_args.iter().map(String::as_str));
        let out = run_cli(&init);
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = home.join("notary.toml");
        if !self.edits.is_empty() {
            let mut table: toml::Table = std::fs::read_to_string(&config).unwrap().parse().unwrap();
            for (section, key, value) in self.edits {
                let entry = table
                    .entry(section)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                entry.as_table_mut().unwrap().insert(key.to_owned(), value);
            }
            std::fs::write(&config, toml::to_string(&table).unwrap()).unwrap();
        }
        let admin_key = std::fs::read_to_string(home.join("admin-key"))
            .unwrap()
            .trim()
            .to_owned();
        let launch = Launch {
            binary: self.binary,
            envs: self.envs,
            log_level: self.log_level,
            config: config.clone(),
            log: home.join("serve.log"),
        };
        let child = launch.spawn();
        let base = format!("https://localhost:{port}");
        let home_cert = home.join("tls/cert.pem");
        let app = TestApp {
            postgres_database: database.filter(|url| !url.starts_with("sqlite:")),
            metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
            _dir: dir,
            home,
            child,
            base,
            admin_key,
            client: client_for(&home_cert, None),
            launch,
        };
        app.wait_ready().await;
        app
    }
}

pub struct TestApp {
    _dir: TempDir,
    pub home: PathBuf,
    pub child: Child,
    pub base: String,
    pub admin_key: String,
    /// The plain-HTTP Prometheus endpoint on loopback.
    pub metrics_url: String,
    /// The test's own PostgreSQL database, dropped with the app.
    postgres_database: Option<String>,
    client: reqwest::Client,
    launch: Launch,
}

/// How the server process is started, kept for restarts.
struct Launch {
    binary: PathBuf,
    envs: Vec<(String, String)>,
    log_level: &'static str,
    config: PathBuf,
    log: PathBuf,
}

impl Launch {
    /// Starts `notary serve`, appending to the log.
    fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        Command::new(&self.binary)
            .args(["serve", "--config", self.config.to_str().unwrap()])
            .env("NOTARY_LOG", self.log_level)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(name) = self.postgres_database.take() {
            drop_database(&name);
        }
    }
}

/// The PostgreSQL server the tests may use (`NOTARY_TEST_POSTGRES_URL`,
/// e.g. postgres://postgres@127.0.0.1:5432), without a database name.
pub fn postgres_base() -> Option<String> {
    std::env::var("NOTARY_TEST_POSTGRES_URL")
        .ok()
        .map(|u| u.trim_end_matches('/').to_owned())
}

/// Whether this run puts every `TestApp` on PostgreSQL
/// (`NOTARY_TEST_BACKEND=postgres`; SQLite otherwise).
pub fn on_postgres() -> bool {
    std::env::var("NOTARY_TEST_BACKEND").as_deref() == Ok("postgres")
}

/// Runs SQL as the superuser on the maintenance database.
pub fn psql_exec(sql: &str) {
    psql(sql)
}

fn psql(sql: &str) {
    let base = postgres_base().expect("NOTARY_TEST_POSTGRES_URL is set");
    let out = Command::new("psql")
        .args([&format!("{base}/postgres"), "-qc", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new, empty PostgreSQL database for one test (its URL), on PostgreSQL runs.
fn fresh_database() -> Option<String> {
    if !on_postgres() {
        return None;
    }
    Some(new_postgres_database())
}

/// Creates an empty database; returns its URL.
pub fn new_postgres_database() -> String {
    let name = format!("notary_t_{}", unique_suffix());
    psql(&format!("CREATE DATABASE {name}"));
    format!("{}/{name}", postgres_base().unwrap())
}

/// Copies a database (no connections may be open to it); returns the copy's URL.
pub fn copy_postgres_database(url: &str) -> String {
    let source = url.rsplit('/').next().unwrap();
    let name = format!("notary_t_{}", unique_suffix());
    psql(&format!("CREATE DATABASE {name} TEMPLATE {source}"));
    format!("{}/{name}", postgres_base().unwrap())
}

pub fn drop_database(url_or_name: &str) {
    let name = url_or_name.rsplit('/').next().unwrap();
    let _ = Command::new("psql")
        .args([
            &format!("{}/postgres", postgres_base().unwrap_or_default()),
            "-qc",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        ])
        .output();
}

/// Unique within this test process (a counter) and across processes (the
/// pid and the time): two tests can never pick the same name, as two free
/// ports could be the same port released and taken again.
fn unique_suffix() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}_{n}_{nanos}", std::process::id())
}

/// The database URL a config file names (SQLite paths resolved).
pub fn database_url(config: &Path) -> String {
    let table: toml::Table = std::fs::read_to_string(config).unwrap().parse().unwrap();
    let url = table["database"]["url"].as_str().unwrap().to_owned();
    match url.strip_prefix("sqlite:") {
        Some(path) => format!("sqlite:{}", config.parent().unwrap().join(path).display()),
        None => url,
    }
}

/// Runs statements on the database a config file names, whichever backend.
pub async fn db_exec(config: &Path, statements: &[&str]) {
    let url = database_url(config);
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        for s in statements {
            sqlx::query(sqlx::AssertSqlSafe(s.to_string()))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        for s in statements {
            sqlx::query(sqlx::AssertSqlSafe(s.to_string()))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    }
}

/// On PostgreSQL, writers stage audit entries and a chainer moves them onto
/// the chain soon after; a test that reads `audit_log` directly chains them
/// first, as notary's own readers do.
async fn chain_staged_audit(url: &str) {
    if url.starts_with("postgres") {
        let store = notary::store::Store::connect(url, 1).await.unwrap();
        store.audit_head().await.unwrap();
        store.close().await;
    }
}

/// What `app`'s metrics listener serves (Prometheus text).
pub async fn metrics_text(app: &TestApp) -> String {
    reqwest::get(&app.metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the Prometheus sample named exactly `name` on `app`'s
/// metrics listener (0 if absent).
pub async fn metric(app: &TestApp, name: &str) -> f64 {
    metrics_text(app)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The first column of the first row of `sql`, as text, whichever backend.
pub async fn db_text(config: &Path, sql: &str) -> String {
    let url = database_url(config);
    chain_staged_audit(&url).await;
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let text: String = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        text
    } else {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let text: String = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        text
    }
}

/// Rows of the audit log as text, whichever backend.
pub async fn audit_rows(config: &Path) -> String {
    let url = database_url(config);
    chain_staged_audit(&url).await;
    let sql = "SELECT seq, event, subject, details FROM audit_log ORDER BY seq";
    let rows: Vec<(i64, String, Option<String>, String)> = if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    } else {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    };
    rows.iter()
        .map(|(seq, event, subject, details)| format!("{seq} {event} {subject:?} {details}\n"))
        .collect()
}

/// A port for a server under test, below the kernel's ephemeral range
/// (32768 and up by default). A port the kernel hands out for `:0` comes
/// from that range, which every outgoing connection of the tests running
/// alongside (clients, database connections) draws from too: one of them
/// could take it between this choice and the server's bind ("Address
/// already in use", a server that never becomes ready). Here each process
/// walks its own stretch of 10000..32000 from a start given by its pid,
/// tests in it share the walk, and a port something holds is skipped.
fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 22_000;
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let step = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = u16::try_from(FIRST + (start + step) % SPAN).unwrap();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the CLI with the given arguments.
pub fn run_cli(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn client_for(cert: &Path, local: Option<IpAddr>) -> reqwest::Client {
    let pem = std::fs::read(cert).unwrap();
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .timeout(Duration::from_secs(30));
    if let Some(ip) = local {
        b = b.local_address(ip);
    }
    b.build().unwrap()
}

impl TestApp {
    pub fn config_path(&self) -> PathBuf {
        self.home.join("notary.toml")
    }

    /// A client that trusts this app's certificate, optionally bound to a
    /// local address (e.g. 127.0.0.2) to look like another wallet.
    pub fn client_from(&self, local: Option<IpAddr>) -> reqwest::Client {
        client_for(&self.home.join("tls/cert.pem"), local)
    }

    /// Polls `base`/readyz until it answers 200; false once `within` passed.
    /// A client of its own, dropped afterwards: no connection stays open.
    pub async fn became_ready(&self, base: &str, within: Duration) -> bool {
        let client = self.client_from(None);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
                if r.status() == 200 {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// An offer as the admin API shows it (state, attempts, timestamps).
    pub async fn offer_view(&self, offer: &Value) -> Value {
        let id = offer["id"].as_str().unwrap();
        self.http()
            .get(self.url(&format!("/v1/openid/offers/{id}")))
            .bearer_auth(&self.admin_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Creates an API key with `role` through the CLI; returns its secret.
    pub fn new_api_key(&self, role: &str) -> String {
        let out = self.cli(&["admin-keys", "create", "--role", role, "--name", role]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("key:"))
            .unwrap()
            .trim()
            .to_owned()
    }

    async fn wait_ready(&self) {
        let base = self.base.clone();
        assert!(
            self.became_ready(&base, Duration::from_secs(30)).await,
            "server did not become ready: {}",
            self.log()
        );
    }

    /// Kills the server outright (SIGKILL: no shutdown code runs, as in a
    /// power cut) and starts it again on the same set-up.
    pub async fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        self.child.wait().unwrap();
        self.child = self.launch.spawn();
        self.wait_ready().await;
    }

    /// Sends a signal (e.g. "HUP") to the server.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Stops the server as systemd would (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "server did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts another `notary serve` on the same database and HSM token, as
    /// a second instance behind a load balancer would run (same public URL,
    /// its own listener).
    pub async fn another_instance(&self) -> Instance {
        let port = free_port();
        let metrics_port = free_port();
        let mut table: toml::Table = std::fs::read_to_string(self.config_path())
            .unwrap()
            .parse()
            .unwrap();
        table["server"]["listen"] = toml::Value::String(format!("127.0.0.1:{port}"));
        table["metrics"]["listen"] = toml::Value::String(format!("127.0.0.1:{metrics_port}"));
        let config = self.home.join(format!("notary-{port}.toml"));
        std::fs::write(&config, toml::to_string(&table).unwrap()).unwrap();
        let log = self.home.join(format!("serve-{port}.log"));
        let child = Command::new(BIN)
            .args(["serve", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let instance = Instance {
            child,
            base: format!("https://localhost:{port}"),
            log,
        };
        assert!(
            self.became_ready(&instance.base, Duration::from_secs(30))
                .await,
            "second instance not ready: {}",
            std::fs::read_to_string(&instance.log).unwrap_or_default()
        );
        instance
    }

    /// Runs statements on this app's database.
    pub async fn sql(&self, statements: &[&str]) {
        db_exec(&self.config_path(), statements).await
    }

    /// Runs the CLI against this app's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        let config = self.config_path();
        let config = config.to_str().unwrap().to_owned();
        all.extend(["--config", &config]);
        run_cli(&all)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("serve.log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Creates an offer with the admin key; returns the 201 body.
    pub async fn create_offer(&self, body: Value) -> Value {
        let r = self
            .http()
            .post(self.url("/v1/openid/offers/pre-authorized"))
            .bearer_auth(&self.admin_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "offer creation failed");
        r.json().await.unwrap()
    }

    /// A default offer with a PIN: (offer body, code, PIN).
    pub async fn offer_with_pin(&self) -> (Value, String, String) {
        let offer = self
            .create_offer(json!({"credentials": ["UniversityDegree_jwt"], "userId": "alice", "transactionCode": true}))
            .await;
        let code = code_of(&offer);
        let pin = offer["transactionCode"].as_str().unwrap().to_owned();
        (offer, code, pin)
    }

    pub fn http(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// Redeems with a form body; returns (status, body).
    pub async fn redeem_form(&self, params: &[(&str, &str)]) -> (u16, Value) {
        let r = self
            .http()
            .post(self.url("/oid4vci/token"))
            .form(params)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// GETs `path` and returns its JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        self.http()
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn jwks(&self) -> Value {
        self.http()
            .get(self.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// The pre-authorized code inside an offer's by-value URI.
pub fn code_of(offer: &Value) -> String {
    let offer_json = offer_json(offer);
    offer_json["grants"][GRANT]["pre-authorized_code"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The Credential Offer JSON inside an offer's by-value URI.
pub fn offer_json(offer: &Value) -> Value {
    let uri = offer["uri"].as_str().unwrap();
    let query = uri.strip_prefix("openid-credential-offer://?").unwrap();
    let (name, value) = form_urlencoded::parse(query.as_bytes()).next().unwrap();
    assert_eq!(name, "credential_offer");
    serde_json::from_str(&value).unwrap()
}

/// A TLS connection speaking HTTP/1.1, for requests reqwest would not send.
pub async fn raw_tls(app: &TestApp) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        rustls_pki_types::CertificateDer::pem_file_iter(app.home.join("tls/cert.pem")).unwrap()
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let port = app.base.rsplit(':').next().unwrap();
    let tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

/// Another server process on the same database and token.
pub struct Instance {
    child: Child,
    /// Its own https base URL.
    pub base: String,
    log: PathBuf,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the ignored test `name` of this test binary in a process of its
/// own (a PKCS#11 module is loaded once per process), with the app's
/// SoftHSM configuration and `var` = `value` in its environment; fails
/// unless that test ran and passed.
pub fn run_child_test(app: &TestApp, name: &str, var: &str, value: &std::ffi::OsStr) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--ignored", "--nocapture"])
        .env("SOFTHSM2_CONF", app.home.join("softhsm2.conf"))
        .env(var, value)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The HSM as `notary serve` opens it, from the app's config and PIN file;
/// with `mac_cipher`, claims sealed by that scheme under the configured
/// claims MAC key.
pub fn open_hsm(
    home: &Path,
    mac_cipher: Option<notary::hsm::capabilities::MacCipher>,
) -> notary::hsm::Hsm {
    let config: toml::Table = std::fs::read_to_string(home.join("notary.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let hsm = &config["hsm"];
    let text = |k: &str| hsm[k].as_str().unwrap().to_owned();
    let settings = notary::hsm::HsmSettings {
        module: text("module").into(),
        token: text("token"),
        hashing_key: text("hashing_key"),
        audit_key: text("audit_key"),
        claims_key: text("claims_key"),
        claims_mac_key: mac_cipher.map(|_| text("claims_mac_key")),
        claims_cipher: mac_cipher.unwrap_or_default(),
        sessions: 1,
        operation_timeout: std::time::Duration::from_secs(10),
    };
    let pin = std::fs::read_to_string(home.join("hsm/user-pin")).unwrap();
    notary::hsm::Hsm::open(
        &settings,
        &notary::secret::HsmPin::new(pin.trim().to_owned()),
    )
    .unwrap()
}

/// `notary probe` for an SD-JWT VC, from outside, as a wallet would: offer,
/// token, nonce, credential and its checks. Its output; fails unless the
/// probe passed.
pub fn probe_sd_jwt(app: &TestApp) -> String {
    let out = run_cli(&[
        "probe",
        "--url",
        &app.base,
        "--admin-key-file",
        app.home.join("admin-key").to_str().unwrap(),
        "--ca",
        app.home.join("tls/cert.pem").to_str().unwrap(),
        "--credential",
        "UniversityDegree_sd_jwt",
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
