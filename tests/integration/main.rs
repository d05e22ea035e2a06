//! Integration tests: the real `notary` binary over HTTPS, on a real SoftHSM2
//! token and a real SQLite database in a temporary directory.

// Test helpers fail loudly: an unwrap that fails is a failing test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod admin;
mod app;
mod audit_log;
mod by_reference;
mod claims;
mod cli;
mod connection_flood;
mod crash;
mod credential_keys;
mod credentials;
mod discovery;
mod exactly_once;
mod faults;
mod hardening;
mod hostile;
mod hsm_faults;
mod indistinguishable;
mod introspection;
mod keys;
mod leaks;
mod link;
mod memory;
mod modules;
mod multi_instance;
mod proofs;
mod secrets_at_rest;
mod service;
mod status;
mod stored_forms;
mod token;
mod under_attack;
mod wallet;
