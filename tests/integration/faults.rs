//! Faults the server must ride out by itself: an HSM that stops answering
//! for seconds, a SQLite database whose disk fills up, and a PostgreSQL
//! database that turns read-only. (A database lost altogether is in
//! `multi_instance`, on PostgreSQL.) Each time: a bare 500 `server_error` (or 503 on `/readyz`),
//! nothing consumed or half-written, and recovery without a restart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::app::{self, GRANT, TestApp};

/// Holds POSIX record locks on every file of the SoftHSM2 token for
/// `seconds`: SoftHSM then waits on its own object files, so every key
/// operation stalls, as a slow or overloaded HSM would.
fn stall_token(tokens: &Path, seconds: u64) -> Child {
    let script = "import fcntl, glob, sys, time\n\
files = [open(f, 'r+') for f in glob.glob(sys.argv[1] + '/*/*')]\n\
[fcntl.lockf(f, fcntl.LOCK_EX) for f in files]\n\
print('locked', flush=True)\n\
time.sleep(float(sys.argv[2]))\n";
    let mut child = Command::new("python3")
        .args(["-c", script, tokens.to_str().unwrap(), &seconds.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    child
}

async fn redeem(app: &TestApp, code: &str, pin: &str) -> (u16, Value) {
    app.redeem_form(&[
        ("grant_type", GRANT),
        ("pre-authorized_code", code),
        ("tx_code", pin),
    ])
    .await
}

async fn readyz(app: &TestApp) -> u16 {
    app.http()
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls `/readyz` up to `attempts` times, `pause` apart, until it answers
/// `status`; whether it did.
async fn readyz_becomes(app: &TestApp, status: u16, attempts: u32, pause: Duration) -> bool {
    for _ in 0..attempts {
        if readyz(app).await == status {
            return true;
        }
        tokio::time::sleep(pause).await;
    }
    false
}

async fn create(app: &TestApp) -> (u16, Value) {
    let r = app
        .http()
        .post(app.url("/v1/openid/offers/pre-authorized"))
        .bearer_auth(&app.admin_key)
        .json(&json!({"credentials": ["UniversityDegree_jwt"]}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn a_stalled_hsm_gives_bounded_500s_and_503_then_recovers() {
    let app = app::builder()
        .set("hsm", "operation_timeout_ms", 1500)
        .start()
        .await;
    let (offer, code, pin) = app.offer_with_pin().await;
    let mut lock = stall_token(&app.home.join("tokens"), 6);

    let started = Instant::now();
    let (status, body) = redeem(&app, &code, &pin).await;
    let waited = started.elapsed();
    assert_eq!(
        (status, body["error"].as_str()),
        (500, Some("server_error")),
        "{body}"
    );
    assert!(
        waited < Duration::from_secs(4),
        "the wait is bounded: {waited:?}"
    );
    assert_eq!(
        readyz(&app).await,
        503,
        "readiness reflects the stalled HSM"
    );
    assert_eq!(create(&app).await.0, 500);

    lock.wait().unwrap();
    assert!(
        readyz_becomes(&app, 200, 50, Duration::from_millis(200)).await,
        "readiness comes back by itself"
    );
    assert_eq!(
        app.offer_view(&offer).await["state"],
        "pending",
        "nothing was consumed"
    );
    assert_eq!(redeem(&app, &code, &pin).await.0, 200);
    assert!(app.log().contains("did not answer within 1500 ms"));
}

/// A small tmpfs of our own, unmounted on drop (needs root, as CI has).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("notary-tmpfs-{}-{size}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fills the file system at `dir` up with a filler file.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status();
    filler
}

fn sqlite_only() -> bool {
    if app::on_postgres() {
        eprintln!(
            "skipped: a SQLite disk fault (the PostgreSQL pass covers a lost database in multi_instance)"
        );
        return false;
    }
    true
}

#[tokio::test]
async fn a_full_disk_fails_cleanly_and_recovers_when_space_returns() {
    if !sqlite_only() {
        return;
    }
    let Some(disk) = Tmpfs::mount("3m") else {
        panic!("cannot mount a tmpfs: this test needs root (CI runs as root)");
    };
    let app = app::builder()
        .sqlite_file(&disk.0.join("notary.db"))
        .start()
        .await;
    let (offer, code, pin) = app.offer_with_pin().await;
    let filler = fill(&disk.0);

    // Writes fail, each with a bare 500; enough of them to be sure the
    // disk is really full and not merely nearly so.
    let mut failures = 0;
    for _ in 0..20 {
        let (status, body) = create(&app).await;
        if status == 500 {
            assert_eq!(
                body,
                json!({"error": "server_error", "error_description": "the request could not be completed"})
            );
            failures += 1;
        }
    }
    assert!(failures > 0, "the full disk was not noticed");
    let (status, body) = redeem(&app, &code, &pin).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (500, Some("server_error")),
        "{body}"
    );

    std::fs::remove_file(filler).unwrap();
    assert_eq!(
        app.offer_view(&offer).await["state"],
        "pending",
        "nothing half-written"
    );
    let (status, body) = redeem(&app, &code, &pin).await;
    assert_eq!(
        status,
        200,
        "recovered without a restart: {body} {}",
        app.log()
    );
    assert_eq!(create(&app).await.0, 201);
    let out = app.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = app::db_text(&app.config_path(), "PRAGMA integrity_check").await;
    assert_eq!(check, "ok");
}

#[tokio::test]
async fn a_read_only_database_fails_cleanly_and_recovers() {
    if !app::on_postgres() {
        eprintln!(
            "skipped: PostgreSQL only (Linux will not remount a disk read-only under an open SQLite file)"
        );
        return;
    }
    let app = app::builder().start().await;
    let (offer, code, pin) = app.offer_with_pin().await;
    let url = app::database_url(&app.config_path());
    let db = url.rsplit('/').next().unwrap().to_owned();
    // As after a failover onto a replica that is not promoted: every new
    // session is read-only. Existing sessions are cut so that the pool
    // opens new ones.
    let reconnect = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()"
    );
    app::psql_exec(&format!(
        "ALTER DATABASE {db} SET default_transaction_read_only = on"
    ));
    app::psql_exec(&reconnect);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (status, body) = redeem(&app, &code, &pin).await;
        assert_eq!(body["error"], "server_error", "{body}");
        statuses.push(status);
    }
    assert_eq!(statuses, [500, 500, 500]);
    assert_eq!(create(&app).await.0, 500);
    assert!(
        readyz_becomes(&app, 503, 20, Duration::from_millis(100)).await,
        "readiness reflects the read-only database"
    );

    app::psql_exec(&format!(
        "ALTER DATABASE {db} RESET default_transaction_read_only"
    ));
    app::psql_exec(&reconnect);
    assert_eq!(
        app.offer_view(&offer).await["state"],
        "pending",
        "nothing half-written"
    );
    let mut recovered = false;
    for _ in 0..25 {
        if redeem(&app, &code, &pin).await.0 == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(recovered, "writes work again without a restart");
    // Readiness verdicts are reused for up to a second.
    assert!(readyz_becomes(&app, 200, 20, Duration::from_millis(100)).await);
    let out = app.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
