//! HealthLake relay: an Envoy proxy-wasm filter that carries Smile CDR's FHIR REST-hook writes to
//! Amazon HealthLake, signed with AWS SigV4.
//!
//! The crate is split in two:
//! - a host-agnostic core (every module except [`filter`]) that never touches the proxy-wasm ABI
//!   and is unit-tested on the host target;
//! - [`filter`], the thin glue that is the only code talking to Envoy.
//!
//! The filter must never panic: a panic traps the Wasm VM and fails every later request on that
//! worker. `unwrap`, `expect`, `panic!` and slice indexing are denied by clippy lints in Cargo.toml.

pub mod body_budget;
pub mod calendar;
pub mod capabilities;
pub mod config;
pub mod credentials;
pub mod discovery;
pub mod fhir;
pub mod flow;
pub mod headers;
pub mod host;
pub mod host_encoding;
pub mod inbound_auth;
pub mod instant;
pub mod operation_outcome;
pub mod outcome;
pub mod percent;
pub mod plan;
pub mod readiness;
pub mod request_head;
pub mod resource;
pub mod shared_data;
pub mod signing;
pub mod text;
pub mod unsupported_types;
pub mod versions;
pub mod worker;

#[cfg(all(target_arch = "wasm32", feature = "filter"))]
pub mod filter;
