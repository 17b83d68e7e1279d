//! The unsigned inspection and control endpoints (`/_emulator/...`): health, the stored
//! resources, the request log, the faults of each part, the STS ledger, the credential
//! endpoints' state, expiry and reset.

use std::time::SystemTime;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, StatusCode};
use serde_json::json;

use super::responses::{json_response, outcome_response, response};
use super::{App, Resp};
use crate::capabilities;
use crate::credentials::{self, faults::CredentialFaultSettings};
use crate::faults::{self, FaultSettings};
use crate::fhir::FHIR_JSON;
use crate::sigv4;
use crate::sts::faults::StsFaultSettings;

impl App {
    /// The exact stored bytes of a resource.
    pub fn stored(&self, resource_type: &str, id: &str) -> Option<Bytes> {
        self.lock()
            .store
            .get(resource_type, id)
            .map(|r| r.body.clone())
    }

    /// The fault settings in force (`next` holding what is left) and the counters.
    pub fn faults(&self) -> faults::FaultStatus {
        self.lock().faults.status()
    }

    /// The unsigned `/_emulator/...` endpoints.
    pub(super) fn inspect(
        &self,
        method: &Method,
        path: &str,
        body: &Bytes,
        now: SystemTime,
    ) -> Resp {
        let text = |status: StatusCode, body: &'static str| {
            response(
                status,
                &[("content-type", "text/plain; charset=utf-8".to_string())],
                body,
            )
        };
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let allowed: Vec<Method> = match segments.as_slice() {
            ["_emulator", "health"]
            | ["_emulator", "resources"]
            | ["_emulator", "resources", _, _]
            | ["_emulator", "requests"]
            | ["_emulator", "capabilities"]
            | ["_emulator", "sts"]
            | ["_emulator", "credentials"] => vec![Method::GET],
            ["_emulator", "reset"]
            | ["_emulator", "freeze"]
            | ["_emulator", "sts", "expire"]
            | ["_emulator", "credentials", "expire"] => vec![Method::POST],
            ["_emulator", "credentials", "settings"] => vec![Method::GET, Method::PUT],
            ["_emulator", "faults"]
            | ["_emulator", "sts", "faults"]
            | ["_emulator", "credentials", "faults"] => {
                vec![Method::GET, Method::PUT, Method::DELETE]
            }
            _ => {
                return outcome_response(
                    StatusCode::NOT_FOUND,
                    "not-found",
                    &format!("no such emulator endpoint: {path}"),
                )
            }
        };
        if !allowed.contains(method) {
            let allowed: Vec<&str> = allowed.iter().map(Method::as_str).collect();
            let allowed = allowed.join(", ");
            let mut resp = outcome_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "not-supported",
                &format!("{path} only supports {allowed}"),
            );
            if let Ok(v) = HeaderValue::from_str(&allowed) {
                resp.headers_mut().insert("allow", v);
            }
            return resp;
        }
        match (segments.as_slice(), method) {
            (["_emulator", "health"], _) => text(StatusCode::OK, "ok"),
            (["_emulator", "capabilities"], _) => {
                // What GET metadata would say now without a metadata fault: the tests' truth.
                let removed = self.lock().faults.unsupported_types().to_vec();
                let statement = capabilities::capability_statement(
                    self.config.resource_types,
                    &removed,
                    None,
                    now,
                    capabilities::Listing::Full,
                );
                json_response(StatusCode::OK, &statement)
            }
            (["_emulator", "freeze"], _) => {
                // As at shutdown, before the state is saved: from now on writes are answered
                // 503 (and retried by their sender), so that the request log read next holds
                // every write this process stored.
                self.lock().frozen = true;
                text(StatusCode::OK, "ok")
            }
            (["_emulator", "reset"], _) => {
                // The STS ledger is kept: issued credentials stay valid until they expire, as
                // they would at AWS, and a relay caching them goes on using them. So are the
                // sets the credential endpoints issued, their call log and the IMDS sessions;
                // their faults and settings (lifetime, down) go back to the defaults.
                let mut state = self.lock();
                state.store.clear();
                state.requests.clear();
                state.seq = 0;
                state.faults.reset(self.config.faults.clone());
                state.sts_faults.reset();
                state.credentials.reset();
                text(StatusCode::OK, "ok")
            }
            (["_emulator", "credentials"], _) => {
                json_response(StatusCode::OK, &self.credentials(now))
            }
            (["_emulator", "credentials", "expire"], _) => json_response(
                StatusCode::OK,
                &json!({ "expired": self.expire_issued_credentials(now) }),
            ),
            (["_emulator", "credentials", "settings"], &Method::PUT) => {
                match credentials::Settings::from_json(body) {
                    Ok(settings) => {
                        let mut state = self.lock();
                        state.credentials.replace_settings(settings);
                        json_response(StatusCode::OK, &state.credentials.settings())
                    }
                    Err(e) => outcome_response(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        &format!("invalid credentials settings: {e}"),
                    ),
                }
            }
            (["_emulator", "credentials", "settings"], _) => {
                json_response(StatusCode::OK, &self.lock().credentials.settings())
            }
            (["_emulator", "credentials", "faults"], &Method::PUT) => {
                match CredentialFaultSettings::from_json(body) {
                    Ok(settings) => {
                        let mut state = self.lock();
                        state.credentials.replace_faults(settings);
                        json_response(StatusCode::OK, &state.credentials.faults())
                    }
                    Err(e) => outcome_response(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        &format!("invalid credentials fault settings: {e}"),
                    ),
                }
            }
            (["_emulator", "credentials", "faults"], &Method::DELETE) => {
                let mut state = self.lock();
                state.credentials.reset_faults();
                json_response(StatusCode::OK, &state.credentials.faults())
            }
            (["_emulator", "credentials", "faults"], _) => {
                json_response(StatusCode::OK, &self.lock().credentials.faults())
            }
            (["_emulator", "sts"], _) => json_response(StatusCode::OK, &self.sts(now)),
            (["_emulator", "sts", "expire"], _) => json_response(
                StatusCode::OK,
                &json!({ "expired": self.expire_sts_credentials(now) }),
            ),
            (["_emulator", "faults"], &Method::PUT) => match FaultSettings::from_json(body) {
                Ok(settings) => {
                    let mut state = self.lock();
                    state.faults.replace(settings);
                    json_response(StatusCode::OK, &state.faults.status())
                }
                Err(e) => outcome_response(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    &format!("invalid fault settings: {e}"),
                ),
            },
            (["_emulator", "faults"], &Method::DELETE) => {
                let mut state = self.lock();
                state.faults.reset(self.config.faults.clone());
                json_response(StatusCode::OK, &state.faults.status())
            }
            (["_emulator", "faults"], _) => {
                json_response(StatusCode::OK, &self.lock().faults.status())
            }
            (["_emulator", "sts", "faults"], &Method::PUT) => {
                match StsFaultSettings::from_json(body) {
                    Ok(settings) => {
                        let mut state = self.lock();
                        state.sts_faults.replace(settings);
                        json_response(StatusCode::OK, &state.sts_faults.status())
                    }
                    Err(e) => outcome_response(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        &format!("invalid STS fault settings: {e}"),
                    ),
                }
            }
            (["_emulator", "sts", "faults"], &Method::DELETE) => {
                let mut state = self.lock();
                state.sts_faults.reset();
                json_response(StatusCode::OK, &state.sts_faults.status())
            }
            (["_emulator", "sts", "faults"], _) => {
                json_response(StatusCode::OK, &self.sts_faults())
            }
            (["_emulator", "requests"], _) => json_response(StatusCode::OK, &self.lock().requests),
            (["_emulator", "resources"], _) => {
                let state = self.lock();
                let list: Vec<serde_json::Value> = state
                    .store
                    .iter()
                    .map(|((t, id), r)| {
                        json!({
                            "resourceType": t,
                            "id": id,
                            "versionId": r.version.to_string(),
                            "size": r.body.len(),
                            "sha256": sigv4::sha256_hex(&r.body),
                        })
                    })
                    .collect();
                json_response(StatusCode::OK, &list)
            }
            (["_emulator", "resources", t, id], _) => {
                let found = self.lock().store.get(t, id).map(|r| r.body.clone());
                match found {
                    Some(body) => response(
                        StatusCode::OK,
                        &[("content-type", FHIR_JSON.to_string())],
                        body,
                    ),
                    None => outcome_response(
                        StatusCode::NOT_FOUND,
                        "not-found",
                        &format!("Resource {t}/{id} is not stored"),
                    ),
                }
            }
            _ => outcome_response(
                StatusCode::NOT_FOUND,
                "not-found",
                &format!("no such emulator endpoint: {path}"),
            ),
        }
    }
}
