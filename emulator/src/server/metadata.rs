//! `GET /datastore/{ds}/r4/metadata`: the CapabilityStatement, and the answers the `metadata`
//! fault puts in its place.

use std::time::SystemTime;

use http::header::HeaderValue;
use http::{HeaderMap, Method, StatusCode};

use super::data_plane::Handled;
use super::responses::{outcome_response, response};
use super::App;
use crate::capabilities::{self, Listing};
use crate::faults::metadata::GARBAGE_BODY;
use crate::faults::{Fault, MetadataFault};
use crate::fhir::FHIR_JSON;

impl App {
    /// `GET /datastore/{ds}/r4/metadata`: the CapabilityStatement of the types served now (the
    /// mode less `unsupported_types`), unless the `metadata` fault shapes the answer.
    pub(super) fn capabilities(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Handled {
        if *method != Method::GET {
            let msg = format!("method {method} is not supported on {path}; use GET");
            let mut resp = outcome_response(StatusCode::METHOD_NOT_ALLOWED, "not-supported", &msg);
            resp.headers_mut()
                .insert("allow", HeaderValue::from_static("GET"));
            return Handled::plain((resp, Some(msg)));
        }
        let (form, removed) = {
            let state = self.lock();
            (
                state.faults.metadata(),
                state.faults.unsupported_types().to_vec(),
            )
        };
        let listing = match form {
            None => Listing::Full,
            Some(MetadataFault::Empty) => Listing::NoResources,
            Some(MetadataFault::NoInteractions) => Listing::NoInteractions,
            Some(MetadataFault::ServerError) => {
                let msg = "Internal Server Error (fault injected by the HealthLake emulator)";
                return Handled {
                    resp: outcome_response(StatusCode::INTERNAL_SERVER_ERROR, "exception", msg),
                    problem: Some(msg.to_string()),
                    fault: form.map(Fault::Metadata),
                };
            }
            Some(MetadataFault::Garbage) => {
                return Handled {
                    resp: response(
                        StatusCode::OK,
                        &[("content-type", FHIR_JSON.to_string())],
                        GARBAGE_BODY,
                    ),
                    problem: Some(
                        "200 with a body that is not JSON (fault injected by the HealthLake \
                         emulator)"
                            .to_string(),
                    ),
                    fault: form.map(Fault::Metadata),
                };
            }
        };
        let base_url = self.base_url(headers);
        let statement = capabilities::capability_statement(
            self.config.resource_types,
            &removed,
            base_url.as_deref(),
            now,
            listing,
        );
        Handled {
            resp: response(
                StatusCode::OK,
                &[("content-type", FHIR_JSON.to_string())],
                serde_json::to_vec(&statement).unwrap_or_default(),
            ),
            problem: None,
            fault: form.map(Fault::Metadata),
        }
    }

    /// `http://{Host}/datastore/{ds}/r4/`: where the request says it was sent (the emulator
    /// serves plain HTTP), when its `Host` is a valid authority.
    fn base_url(&self, headers: &HeaderMap) -> Option<String> {
        let host = headers.get("host")?.to_str().ok()?;
        let authority = host.parse::<http::uri::Authority>().ok()?;
        if authority.as_str().contains('@') {
            return None;
        }
        Some(format!(
            "http://{authority}/datastore/{}/r4/",
            self.config.datastore_id
        ))
    }
}
