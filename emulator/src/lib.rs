//! A local emulator of the Amazon HealthLake FHIR data plane, for integration tests of the
//! HealthLake relay.
//!
//! - [`sigv4`]: an independent AWS SigV4 verifier, written from the specification.
//! - [`store`]: the in-memory resource store (exact bytes, per-resource versions).
//! - [`fhir`]: OperationOutcome bodies and `PUT` body checks.
//! - [`server`]: routing, handlers, the request log and the hyper HTTP/1.1 server.
//! - [`timefmt`]: the few UTC date formats involved.

pub mod fhir;
pub mod server;
pub mod sigv4;
pub mod store;
pub mod timefmt;

pub use server::{serve, App, Config, RequestRecord};
pub use sigv4::Credential;
