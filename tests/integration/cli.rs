//! The command line: one-line errors, init's refusal to overwrite, check, offers.

use crate::app::{self, run_cli};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn init_refuses_to_overwrite_and_check_reports_ok() {
    let app = app::builder().start().await;
    let home = app.home.to_str().unwrap();
    let out = run_cli(&["init", "--dir", home]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");

    let config = app.config_path();
    let out = run_cli(&["check", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = String::from_utf8(out.stdout).unwrap();
    assert!(report.contains("CKA_EXTRACTABLE=false"), "{report}");
    assert!(report.contains("database (schema current)"), "{report}");

    // A filter of the operator's own still keeps cryptoki's ERROR lines for
    // mechanism numbers it cannot name (SoftHSM2 lists several) out of the log.
    let out = std::process::Command::new(app::BIN)
        .args(["check", "--config", config.to_str().unwrap()])
        .env("NOTARY_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("cryptoki"), "{}", stderr(&out));

    let out = run_cli(&["migrate", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = run_cli(&[
        "offers",
        "create",
        "--credential",
        "UniversityDegree_jwt",
        "--user-id",
        "carol",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["userId"], "carol");
    assert!(
        created["transactionCode"]
            .as_str()
            .is_some_and(|p| p.len() == 6)
    );
}

#[test]
fn bad_input_gets_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let out = run_cli(&["check", "--config", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.starts_with("notary: cannot read config file"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = \"nope\"\n").unwrap();
    let out = run_cli(&["check", "--config", bad.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("invalid config file"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let out = run_cli(&[
        "init",
        "--dir",
        dir.path().join("x").to_str().unwrap(),
        "--alg",
        "RS256",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("EdDSA or ES256"), "{}", stderr(&out));
}

#[tokio::test]
async fn serve_refuses_a_wrong_pin_with_a_clear_message() {
    let app = app::builder().start().await;
    let pin_file = app.home.join("hsm/user-pin");
    std::fs::write(&pin_file, "not-the-pin\n").unwrap();
    let out = run_cli(&["check", "--config", app.config_path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("login refused"), "{err}");
    assert!(
        !err.contains("not-the-pin"),
        "the PIN is never echoed: {err}"
    );
}

/// A refused PIN is presented once: `serve` and `check` exit with status 78
/// (`RestartPreventExitStatus=78` in the unit), so systemd does not restart
/// the service into another login that would bring a real HSM closer to
/// locking its user. SoftHSM has no lockout: the log counts the attempts.
#[tokio::test]
async fn a_refused_pin_is_presented_once_and_exits_with_status_78() {
    let mut app = app::builder().start().await;
    app.stop();
    std::fs::write(app.home.join("hsm/user-pin"), "not-the-pin\n").unwrap();
    for command in ["serve", "check"] {
        let out = std::process::Command::new(app::BIN)
            .args([command, "--config", app.config_path().to_str().unwrap()])
            .env("NOTARY_LOG", "info")
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{command}: {err}");
        assert_eq!(
            err.matches("logging in to the HSM token").count(),
            1,
            "{command} presented the PIN exactly once: {err}"
        );
        assert!(err.contains("login refused"), "{err}");
        assert!(
            !err.contains("not-the-pin"),
            "the PIN is never echoed: {err}"
        );
    }
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/notary.service"),
    )
    .unwrap();
    assert!(
        unit.lines().any(|l| l == "RestartPreventExitStatus=78"),
        "systemd must not restart after a refused PIN"
    );
}

/// A key imported into the token (made outside it, so `CKA_LOCAL` is false)
/// is refused by `check` and `serve`, naming the attribute.
#[tokio::test]
async fn a_key_not_generated_on_the_token_is_refused() {
    let app = app::builder().start().await;
    let work = tempfile::tempdir().unwrap();
    let sh = |script: &str| {
        let out = std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(work.path())
            .env("SOFTHSM2_CONF", app.home.join("softhsm2.conf"))
            .env("PIN_FILE", app.home.join("hsm/user-pin"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh("openssl ecparam -name prime256v1 -genkey -noout -out k.pem
        openssl pkcs8 -topk8 -nocrypt -in k.pem -outform DER -out priv.der
        openssl ec -in k.pem -pubout -outform DER -out pub.der
        for t in privkey:priv.der pubkey:pub.der; do
          pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so --token-label notary --login \
            --pin \"$(cat \"$PIN_FILE\")\" --write-object \"${t#*:}\" --type \"${t%%:*}\" \
            --label imported-1 --id 99 >/dev/null
        done");
    // Record the imported key as the active Notary key.
    app.sql(&[
        "UPDATE signing_keys SET label = 'imported-1' WHERE state = 'active' AND purpose = 'token'",
    ])
    .await;
    let weak = app.config_path();
    for command in ["check", "serve"] {
        let out = run_cli(&[command, "--config", weak.to_str().unwrap()]);
        assert!(!out.status.success(), "{command} must refuse");
        let err = stderr(&out);
        assert!(
            err.contains("\"imported-1\": CKA_LOCAL is false"),
            "{command}: {err}"
        );
    }
}

#[tokio::test]
async fn a_pin_file_readable_by_others_is_refused() {
    let app = app::builder().start().await;
    use std::os::unix::fs::PermissionsExt as _;
    let pin = app.home.join("hsm/user-pin");
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run_cli(&["check", "--config", app.config_path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("must be 0600 or stricter"),
        "{}",
        stderr(&out)
    );
}

/// Keys generated on the token but with pkcs11-tool's broad templates
/// (extractable) are refused too: a signing key and the hashing key.
#[tokio::test]
async fn extractable_keys_made_by_pkcs11_tool_are_refused() {
    let app = app::builder().start().await;
    let out = std::process::Command::new("bash")
        .args([
            "-euo",
            "pipefail",
            "-c",
            "m=/usr/lib/softhsm/libsofthsm2.so; pin=$(cat \"$PIN_FILE\")
             pkcs11-tool --module $m --token-label notary --login --pin \"$pin\" \
               --keypairgen --key-type EC:prime256v1 --label weak-gen --id 77 --extractable --private >/dev/null
             pkcs11-tool --module $m --token-label notary --login --pin \"$pin\" \
               --keygen --key-type GENERIC:32 --label weak-hmac --id 78 --extractable --private >/dev/null",
        ])
        .env("SOFTHSM2_CONF", app.home.join("softhsm2.conf"))
        .env("PIN_FILE", app.home.join("hsm/user-pin"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The hashing key, named in the config.
    let config = std::fs::read_to_string(app.config_path()).unwrap();
    let weak_hmac = app.home.join("weak-hmac.toml");
    std::fs::write(
        &weak_hmac,
        config.replace(
            "hashing_key = \"notary-hmac-1\"",
            "hashing_key = \"weak-hmac\"",
        ),
    )
    .unwrap();
    let out = run_cli(&["check", "--config", weak_hmac.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("\"weak-hmac\": CKA_NEVER_EXTRACTABLE is false"),
        "{}",
        stderr(&out)
    );

    // The signing key, recorded as active.
    app.sql(&[
        "UPDATE signing_keys SET label = 'weak-gen' WHERE state = 'active' AND purpose = 'token'",
    ])
    .await;
    let out = run_cli(&["check", "--config", app.config_path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("\"weak-gen\": CKA_NEVER_EXTRACTABLE is false"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn probe_runs_the_whole_flow_from_outside() {
    let app = app::builder().start().await;
    let key_file = app.home.join("admin-key");
    let ca = app.home.join("tls/cert.pem");
    let out = run_cli(&[
        "probe",
        "--url",
        &app.base,
        "--admin-key-file",
        key_file.to_str().unwrap(),
        "--ca",
        ca.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = String::from_utf8(out.stdout).unwrap();
    let steps = [
        "metadata",
        "offer",
        "token",
        "verify",
        "nonce",
        "credential",
        "check",
        "notify",
    ];
    for step in steps {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(step) && l.contains(" ms")),
            "{report}"
        );
    }
    // Both formats, each checked against the keys notary publishes for it.
    for (credential, check) in [
        ("UniversityDegree_sd_jwt", "bound to the holder key"),
        ("UniversityDegree_jwt", "signature valid against did:web:"),
    ] {
        let out = run_cli(&[
            "probe",
            "--url",
            &app.base,
            "--admin-key-file",
            key_file.to_str().unwrap(),
            "--ca",
            ca.to_str().unwrap(),
            "--credential",
            credential,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let report = String::from_utf8(out.stdout).unwrap();
        assert!(report.contains(check), "{report}");
    }
    let bad = app.home.join("bad-key");
    std::fs::write(&bad, "notary_wrong").unwrap();
    let out = run_cli(&[
        "probe",
        "--url",
        &app.base,
        "--admin-key-file",
        bad.to_str().unwrap(),
        "--ca",
        ca.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("offer: HTTP 401"), "{}", stderr(&out));
}

#[test]
fn print_default_is_the_commented_reference_config() {
    let out = run_cli(&["config", "print-default"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("pin_credential = \"notary-hsm-pin\""));
    assert!(
        text.lines().filter(|l| l.starts_with('#')).count() > 30,
        "fully commented"
    );
}

/// Offers deleted before the tokens issued from them expire are refused by
/// `check` and `serve` alike, with one line naming both settings.
#[test]
fn offer_retention_shorter_than_the_token_lifetime_is_refused() {
    let out = run_cli(&["config", "print-default"]);
    let reference = String::from_utf8(out.stdout).unwrap();
    let text = reference.replace("offers_secs = 604800", "offers_secs = 60");
    assert_ne!(text, reference);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("notary.toml");
    std::fs::write(&config, text).unwrap();
    for command in ["check", "serve"] {
        let out = run_cli(&[command, "--config", config.to_str().unwrap()]);
        assert!(!out.status.success(), "{command} must refuse");
        let err = stderr(&out);
        assert!(
            err.contains(
                "retention.offers_secs (60) must be at least issuance.access_token_ttl_secs (300)"
            ),
            "{command}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{command}: {err}");
    }
}

/// The PIN from a systemd credential (`LoadCredential[Encrypted]=`).
#[tokio::test]
async fn the_pin_comes_from_the_credentials_directory() {
    let app = app::builder().start().await;
    let config = std::fs::read_to_string(app.config_path()).unwrap().replace(
        "pin_file = \"hsm/user-pin\"",
        "pin_credential = \"notary-hsm-pin\"",
    );
    let with_credential = app.home.join("credential.toml");
    std::fs::write(&with_credential, config).unwrap();
    let creds = app.home.join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::copy(app.home.join("hsm/user-pin"), creds.join("notary-hsm-pin")).unwrap();

    let out = run_cli(&["check", "--config", with_credential.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("$CREDENTIALS_DIRECTORY is not set"),
        "{}",
        stderr(&out)
    );

    let out = std::process::Command::new(app::BIN)
        .args(["check", "--config", with_credential.to_str().unwrap()])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Runs `notary ARGS` from a shell whose umask is 022, the usual default
/// that would leave new files readable by everyone.
fn notary_with_umask_022(args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", "umask 022; exec \"$0\" \"$@\"", app::BIN])
        .args(args);
    command
}

/// Every file and directory under `dir`, with its permission bits.
fn modes_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        found.push((path.clone(), meta.permissions().mode() & 0o7777));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        }
    }
    found
}

fn assert_private(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let found = modes_under(dir);
    for (path, mode) in &found {
        let wanted = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(
            *mode,
            wanted,
            "{} has mode {mode:o}, wanted {wanted:o}",
            path.display()
        );
    }
    found.into_iter().map(|(path, _)| path).collect()
}

/// Under `umask 022`, `notary init` still makes every directory 0700 and
/// every file 0600 (config, database, PINs, keys, SoftHSM2 token files),
/// and `serve` keeps the SQLite side files it creates private too.
#[test]
fn init_and_serve_create_only_private_files_whatever_the_umask() {
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("a/notary");
    let out = notary_with_umask_022(&[
        "init",
        "--dir",
        home.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let created = assert_private(&work.path().join("a"));
    for name in [
        "notary.toml",
        "notary.db",
        "softhsm2.conf",
        "admin-key",
        "audit-key.pub",
        "hsm/user-pin",
        "hsm/so-pin",
        "tls/key.pem",
        "tls/cert.pem",
        "tokens",
    ] {
        assert!(created.contains(&home.join(name)), "{name} was not created");
    }
    assert!(
        created.iter().any(|p| p.starts_with(home.join("tokens/"))),
        "the SoftHSM2 token files are walked too: {created:?}"
    );

    // SQLite creates notary.db-wal and notary.db-shm when serve opens it.
    let config = home.join("notary.toml");
    let mut serve = notary_with_umask_022(&["serve", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !(home.join("notary.db-wal").exists() && home.join("notary.db-shm").exists()) {
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not open the database"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let during = modes_under(&home);
    serve.kill().unwrap();
    serve.wait().unwrap();
    for (path, mode) in during {
        let wanted = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, wanted, "{} has mode {mode:o}", path.display());
    }
}

/// `init` refuses an existing `--dir` that other users can enter, and says
/// how to fix it; a private one is used.
#[test]
fn init_refuses_an_existing_dir_open_to_others() {
    use std::os::unix::fs::PermissionsExt as _;
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("shared");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let args = [
        "init",
        "--dir",
        home.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    let out = notary_with_umask_022(&args).output().unwrap();
    assert!(!out.status.success(), "init must refuse a 0755 directory");
    let err = stderr(&out);
    assert!(
        err.contains("open to other users (mode 755)") && err.contains("chmod 700"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
    assert_eq!(
        std::fs::read_dir(&home).unwrap().count(),
        0,
        "nothing is written into the refused directory"
    );

    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = notary_with_umask_022(&args).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_private(&home);
}

/// The custody rule covers what a key may do, not only how it was made: a
/// key that may also derive, decrypt or unwrap could move secrets in or out
/// of the token. Keys made with `pkcs11-tool` that are otherwise sound
/// (generated on the token, sensitive, never extractable, private, may
/// sign): an HMAC key with its broad default usage (encrypt, decrypt, wrap,
/// unwrap; pkcs11-tool cannot allow derive on a secret key) and a signing
/// key allowed to derive. `check` and `serve` refuse both.
#[tokio::test]
async fn keys_allowed_to_derive_or_decrypt_are_refused() {
    let mut app = app::builder().start().await;
    app.stop();
    let out = std::process::Command::new("bash")
        .args([
            "-euo",
            "pipefail",
            "-c",
            "m=/usr/lib/softhsm/libsofthsm2.so; pin=$(cat \"$PIN_FILE\")
             pkcs11-tool --module $m --token-label notary --login --pin \"$pin\" --keygen \
               --key-type GENERIC:32 --label broad-hmac --sensitive --private --usage-sign \
               --usage-derive >/dev/null
             pkcs11-tool --module $m --token-label notary --login --pin \"$pin\" --keypairgen \
               --key-type EC:prime256v1 --label deriving-sig --sensitive --private --usage-sign \
               --usage-derive >/dev/null",
        ])
        .env("SOFTHSM2_CONF", app.home.join("softhsm2.conf"))
        .env("PIN_FILE", app.home.join("hsm/user-pin"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let config = app.config_path();
    let original = std::fs::read_to_string(&config).unwrap();
    let broad = original.replace(
        "hashing_key = \"notary-hmac-1\"",
        "hashing_key = \"broad-hmac\"",
    );
    assert_ne!(broad, original);
    std::fs::write(&config, broad).unwrap();
    for command in ["check", "serve"] {
        let out = run_cli(&[command, "--config", config.to_str().unwrap()]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{command} must refuse: {err}");
        assert!(
            err.contains("key \"broad-hmac\": CKA_DECRYPT is true but must be false"),
            "{command}: {err}"
        );
    }
    std::fs::write(&config, original).unwrap();
    app.sql(&["UPDATE signing_keys SET label = 'deriving-sig' WHERE state = 'active' AND purpose = 'token'"])
        .await;
    for command in ["check", "serve"] {
        let out = run_cli(&[command, "--config", config.to_str().unwrap()]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{command} must refuse: {err}");
        assert!(
            err.contains("key \"deriving-sig\": CKA_DERIVE is true but must be false"),
            "{command}: {err}"
        );
    }
}
