//! The IMDSv2 (`/latest/...`) and container (`/v1/credentials`, `/v2/credentials/...`)
//! credential endpoints on the main listener: their answers, their call log and the sets they
//! issued.

use std::time::SystemTime;

use http::{HeaderMap, Method, Uri};

use super::routing::Endpoint;
use super::{App, Resp};
use crate::credentials::container::{self, Authorization};
use crate::credentials::{imds, CredentialsStatus, EndpointRequest};

impl App {
    /// The credential endpoints' call log, issued sets (`expired` as of `now`) and settings
    /// (`GET /_emulator/credentials`).
    pub fn credentials(&self, now: SystemTime) -> CredentialsStatus {
        self.lock().credentials.status(now)
    }

    /// Makes every set the IMDS and container endpoints issued that has not expired yet expire
    /// at `now`; returns how many.
    pub fn expire_issued_credentials(&self, now: SystemTime) -> usize {
        self.lock().credentials.expire_all(now)
    }

    /// Answers a request on the IMDS or container endpoint and records it in the credentials
    /// call log (not in the data-plane request log). The container token file is read before
    /// the state is locked.
    pub(super) fn credential_endpoint(
        &self,
        endpoint: Endpoint,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Resp {
        let req = EndpointRequest {
            method,
            path: uri.path(),
            headers,
            now,
        };
        let handled = match endpoint {
            Endpoint::Container => {
                let authorization =
                    Authorization::read(self.config.container_token_file.as_deref());
                let mut state = self.lock();
                let frozen = state.frozen;
                container::handle(&mut state.credentials, &req, &authorization, frozen)
            }
            Endpoint::Imds => {
                let mut state = self.lock();
                let frozen = state.frozen;
                imds::handle(&mut state.credentials, &req, &self.config.imds_role, frozen)
            }
        };
        if self.config.log_requests {
            eprintln!(
                "healthlake-emulator: creds {method} {} -> {} {}",
                uri.path(),
                handled.call.status,
                handled.summary
            );
        }
        handled.resp
    }
}
