//! Integration tests: the real `notary` binary over HTTPS, on a real SoftHSM2
//! token and a real SQLite database in a temporary directory.

mod app;
mod admin;
mod cli;
mod discovery;
mod exactly_once;
mod secrets_at_rest;
mod token;
