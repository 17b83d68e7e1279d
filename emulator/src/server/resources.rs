//! `PUT`, `GET` and `DELETE` of `/datastore/{ds}/r4/{Type}/{id}`: the exact bytes stored, their
//! versions and the headers of a resource answer.

use std::time::SystemTime;

use bytes::Bytes;
use http::StatusCode;

use super::responses::{outcome_response, response};
use super::{App, Resp, SHUTTING_DOWN};
use crate::fhir::{self, FHIR_JSON};
use crate::timefmt;

impl App {
    fn resource_headers(
        &self,
        resource_type: &str,
        id: &str,
        version: u64,
        at: SystemTime,
    ) -> Vec<(&'static str, String)> {
        vec![
            ("content-type", FHIR_JSON.to_string()),
            ("etag", format!("W/\"{version}\"")),
            (
                "location",
                format!(
                    "/datastore/{}/r4/{resource_type}/{id}/_history/{version}",
                    self.config.datastore_id
                ),
            ),
            ("last-modified", timefmt::format_http_date(at)),
        ]
    }

    pub(super) fn put(
        &self,
        resource_type: &str,
        id: &str,
        body: &Bytes,
        now: SystemTime,
    ) -> (Resp, Option<String>) {
        let resource = match fhir::validate_put(body, resource_type, id) {
            Ok(r) => r,
            Err(rej) => {
                return (
                    outcome_response(StatusCode::BAD_REQUEST, rej.code, &rej.diagnostics),
                    Some(rej.diagnostics),
                )
            }
        };
        let outcome = {
            let mut state = self.lock();
            if state.frozen {
                return (
                    outcome_response(StatusCode::SERVICE_UNAVAILABLE, "transient", SHUTTING_DOWN),
                    Some(SHUTTING_DOWN.to_string()),
                );
            }
            state.store.put(resource_type, id, body.clone(), now)
        };
        let echoed = fhir::with_meta(
            resource,
            outcome.version,
            &timefmt::format_rfc3339_millis(now),
        );
        let status = if outcome.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        let headers = self.resource_headers(resource_type, id, outcome.version, now);
        (response(status, &headers, echoed), None)
    }

    pub(super) fn get(&self, resource_type: &str, id: &str) -> (Resp, Option<String>) {
        let found = self
            .lock()
            .store
            .get(resource_type, id)
            .map(|r| (r.body.clone(), r.version, r.last_updated));
        match found {
            Some((body, version, at)) => {
                let headers = self.resource_headers(resource_type, id, version, at);
                (response(StatusCode::OK, &headers, body), None)
            }
            None => {
                let msg = format!("Resource {resource_type}/{id} is not known");
                (
                    outcome_response(StatusCode::NOT_FOUND, "not-found", &msg),
                    Some(msg),
                )
            }
        }
    }

    pub(super) fn delete(&self, resource_type: &str, id: &str) -> (Resp, Option<String>) {
        let deleted = {
            let mut state = self.lock();
            if state.frozen {
                return (
                    outcome_response(StatusCode::SERVICE_UNAVAILABLE, "transient", SHUTTING_DOWN),
                    Some(SHUTTING_DOWN.to_string()),
                );
            }
            state.store.delete(resource_type, id)
        };
        if deleted {
            return (response(StatusCode::NO_CONTENT, &[], Bytes::new()), None);
        }
        if self.config.delete_absent_status == StatusCode::NOT_FOUND {
            let msg = format!("Resource {resource_type}/{id} is not known");
            (
                outcome_response(StatusCode::NOT_FOUND, "not-found", &msg),
                Some(msg),
            )
        } else {
            (
                response(self.config.delete_absent_status, &[], Bytes::new()),
                None,
            )
        }
    }
}
