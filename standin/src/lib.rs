//! A Smile CDR stand-in for testing the HealthLake relay: it replays REST-hook deliveries
//! exactly as HAPI FHIR sends them, with the message broker's retries and per-resource
//! ordering, and says what Smile CDR holds at the end.
//!
//! - [`plan`]: the plan generator (historical backfill from the HL7 R4 examples, from a seed).
//! - [`delivery`]: plan and truth files.
//! - [`send`]: the delivery threads.
//! - [`summary`]: counters and the final summary.
//! - [`rng`], [`fhirtime`]: a seedable generator and FHIR instants.

pub mod delivery;
pub mod fhirtime;
pub mod plan;
pub mod rng;
pub mod send;
pub mod summary;
