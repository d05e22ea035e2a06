//! Giving the PKCS#11 module the environment it reads at load time.
//!
//! Modules such as SoftHSM2 (`SOFTHSM2_CONF`) or Luna (`ChrystokiConfigurationPath`)
//! read their configuration from the environment. Changing our own
//! environment is `unsafe` in Rust 2024 (and this crate forbids `unsafe`),
//! so when the configured values are not already set we re-execute the
//! same binary with the same arguments and the values added. `exec`
//! replaces the process in place: the PID stays, so systemd is unaffected.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt as _;

use anyhow::Context as _;

/// Marks a process that was already re-executed, so a module that changes
/// its own environment can never cause a loop.
const REEXEC_MARK: &str = "NOTARY_MODULE_ENV_APPLIED";

/// Returns when `env` is already in effect; otherwise re-executes (and only
/// returns on failure).
pub fn ensure(env: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let missing = env
        .iter()
        .any(|(k, v)| std::env::var_os(k).is_none_or(|current| current != v.as_str()));
    if !missing {
        return Ok(());
    }
    if std::env::var_os(REEXEC_MARK).is_some() {
        anyhow::bail!("the PKCS#11 module environment could not be applied (hsm.module_env)");
    }
    let exe = std::env::current_exe().context("finding the notary binary to re-execute")?;
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .envs(env)
        .env(REEXEC_MARK, "1")
        .exec();
    Err(error).context("re-executing notary with hsm.module_env")
}
