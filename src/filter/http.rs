//! Envoy's HTTP callbacks for one request, handed to the core's [`Request`] with Envoy as its
//! host.

use super::envoy::WasmHost;
use super::metrics::Metrics;
use crate::flow::{Action, Request};
use crate::worker::Worker;
use proxy_wasm::traits::{Context, HttpContext};
use std::rc::Rc;

pub struct RelayHttp {
    request: Request,
    metrics: Rc<Metrics>,
}

impl RelayHttp {
    pub fn new(worker: Option<Rc<Worker>>, metrics: Rc<Metrics>, context_id: u32) -> RelayHttp {
        RelayHttp {
            request: Request::new(worker, context_id),
            metrics,
        }
    }
}

fn action(a: Action) -> proxy_wasm::types::Action {
    match a {
        Action::Continue => proxy_wasm::types::Action::Continue,
        Action::Pause => proxy_wasm::types::Action::Pause,
    }
}

impl Context for RelayHttp {
    fn on_done(&mut self) -> bool {
        self.request.on_done();
        true
    }
}

impl HttpContext for RelayHttp {
    fn on_http_request_headers(
        &mut self,
        _num_headers: usize,
        end_of_stream: bool,
    ) -> proxy_wasm::types::Action {
        #[cfg(feature = "trap-for-tests")]
        trap_for_tests();
        let host = WasmHost::new(&self.metrics);
        action(self.request.on_request_headers(&host, end_of_stream))
    }

    fn on_http_request_body(
        &mut self,
        body_size: usize,
        end_of_stream: bool,
    ) -> proxy_wasm::types::Action {
        let host = WasmHost::new(&self.metrics);
        action(
            self.request
                .on_request_body(&host, body_size, end_of_stream),
        )
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> proxy_wasm::types::Action {
        let host = WasmHost::new(&self.metrics);
        action(self.request.on_request_trailers(&host))
    }

    fn on_http_response_headers(
        &mut self,
        _num_headers: usize,
        end_of_stream: bool,
    ) -> proxy_wasm::types::Action {
        let host = WasmHost::new(&self.metrics);
        action(self.request.on_response_headers(&host, end_of_stream))
    }

    fn on_http_response_body(
        &mut self,
        body_size: usize,
        end_of_stream: bool,
    ) -> proxy_wasm::types::Action {
        let host = WasmHost::new(&self.metrics);
        action(
            self.request
                .on_response_body(&host, body_size, end_of_stream),
        )
    }
}

/// A test build's deliberate bug: a request with `x-relay-test-trap` traps the VM (what a panic
/// ends in, with `panic = "abort"`), after saying so in the log.
#[cfg(feature = "trap-for-tests")]
fn trap_for_tests() {
    let trap = super::abi::header(super::abi::Map::Request, b"x-relay-test-trap");
    if matches!(trap, Ok(Some(_))) {
        log::error!("healthlake-relay: x-relay-test-trap: trapping on purpose (test build)");
        core::arch::wasm32::unreachable();
    }
}
