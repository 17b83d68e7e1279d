//! The health listener's `GET /ready` (`crate::readiness`), answered by the plugin instance with
//! root id `healthlake_relay_readiness`: a `503` with the reason while the relay cannot sign;
//! otherwise the request goes on to Envoy's health-check filter, which answers it. Any method but
//! GET and HEAD is answered `405` on that listener, whatever the path.

use super::abi::{self, Map};
use super::envoy::WasmHost;
use super::host;
use super::metrics::Metrics;
use crate::operation_outcome::FHIR_JSON;
use crate::readiness::{self, Readiness};
use crate::worker::Worker;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

pub struct ReadinessHttp {
    pub worker: Option<Rc<Worker>>,
    pub metrics: Rc<Metrics>,
}

impl Context for ReadinessHttp {}

impl HttpContext for ReadinessHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let method = abi::header(Map::Request, b":method")
            .ok()
            .flatten()
            .unwrap_or_default();
        if !readiness::serves_method(&method) {
            return answer(405, &readiness::method_refused_body());
        }
        let path = abi::header(Map::Request, b":path")
            .ok()
            .flatten()
            .unwrap_or_default();
        if !readiness::is_probe(&path) {
            return Action::Continue;
        }
        let verdict = match &self.worker {
            None => Readiness::NotReady("the relay has no configuration".into()),
            Some(worker) => match worker.credentials.try_borrow_mut() {
                Ok(mut provider) => readiness::check(
                    &mut provider,
                    &WasmHost {
                        metrics: &self.metrics,
                    },
                ),
                Err(_) => Readiness::NotReady("the credentials are being updated".into()),
            },
        };
        match verdict {
            Readiness::Ready => Action::Continue,
            Readiness::NotReady(why) => answer(503, &readiness::not_ready_body(&why)),
        }
    }
}

/// Answers the request locally (or resets it if even that fails).
fn answer(status: u16, body: &[u8]) -> Action {
    let headers = [("content-type", FHIR_JSON), ("cache-control", "no-store")];
    if !host::send_local_response(status, &headers, body) {
        host::reset_request();
    }
    Action::Pause
}
