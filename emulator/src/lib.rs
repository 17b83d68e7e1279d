//! A local emulator of the Amazon HealthLake FHIR data plane, for integration tests of the
//! HealthLake relay.
//!
//! - [`sigv4`]: an independent AWS SigV4 verifier, written from the specification.
//! - [`store`]: the in-memory resource store (exact bytes, per-resource versions).
//! - [`fhir`]: OperationOutcome bodies and `PUT` body checks.
//! - [`capabilities`]: the resource types served (HealthLake's list, or all of R4), their
//!   interactions, and the CapabilityStatement.
//! - [`faults`]: fault injection (errors, resets, throttling, delays, unsupported types, the
//!   CapabilityStatement's answers).
//! - [`frontend`]: the routing headers AWS's front end adds to every data-plane answer.
//! - [`server`]: routing, handlers, the request log and the inspection endpoints.
//! - [`net`]: the hyper HTTP/1.1 accept loop and abortive closes.
//! - [`sts`]: the STS recording proxy and the temporary credentials it learns, and the web
//!   identity token check of `AssumeRoleWithWebIdentity`.
//! - [`credentials`]: the IMDSv2 and container credential endpoints and the temporary
//!   credentials they issue.
//! - [`persist`]: the state file (`--state-file`): resources and temporary credentials kept
//!   across a restart.
//! - [`timefmt`]: the few UTC date formats involved.

pub mod capabilities;
pub mod credentials;
pub mod faults;
pub mod fhir;
pub mod frontend;
pub mod net;
pub mod persist;
pub mod server;
pub mod sigv4;
pub mod store;
pub mod sts;
pub mod timefmt;

pub use capabilities::ResourceTypes;
pub use credentials::{CredentialCall, CredentialsStatus, IssuedBy};
pub use faults::{Fault, FaultSettings, MetadataFault};
pub use net::serve;
pub use persist::Snapshot;
pub use server::{Answer, App, Config, RequestRecord, SHUTTING_DOWN};
pub use sigv4::Credential;
pub use sts::proxy::{serve_sts_proxy, StsUpstream};
pub use sts::{CallNotes, StsCall, StsStatus, UpstreamOutcome};
