//! notary: an HSM-backed token server for the OpenID4VCI Pre-Authorized Code flow.
//!
//! Requests travel one way, downwards: `cli` and `http` call the use cases
//! in `issuance`, which use `hsm` (PKCS#11), `store` (SQL) and `audit`.
//! `oid4vci`, `jose` and `x509` hold protocol types and encodings shared by
//! all layers.
//! See `docs/architecture.md` for the map.

pub mod audit;
pub mod cli;
pub mod config;
pub mod formats;
pub mod hsm;
pub mod http;
pub mod issuance;
pub mod jose;
pub mod memory;
pub mod oid4vci;
pub mod secret;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod x509;
