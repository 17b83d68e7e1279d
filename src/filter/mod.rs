//! The proxy-wasm layer: Envoy's root and HTTP contexts, handing every callback to the core with
//! Envoy as its host ([`envoy::WasmHost`]). The only code that touches the ABI.
//!
//! It makes its host calls through [`abi`], never through the SDK's wrappers (which panic on a
//! header value that is not UTF-8 and on host statuses they did not foresee), so that every host
//! answer, and any bytes a client sends, has a handled path.

mod abi;
mod envoy;
mod host;
mod http;
mod logger;
mod metrics;
mod readiness;

use crate::capabilities::MAX_STATEMENT_BYTES;
use crate::credentials::provider::{ForSigning, MAX_ANSWER_BYTES};
use crate::worker::Worker;
use envoy::WasmHost;
use host::log_error;
use metrics::Metrics;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::rc::Rc;
use std::time::Duration;

/// How often each worker syncs the credentials and the supported types, and looks after waiting
/// requests.
const TICK: Duration = Duration::from_millis(250);

proxy_wasm::main! {{
    logger::install();
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(RelayRoot::default()) });
}}

#[derive(Default)]
struct RelayRoot {
    worker: Option<Rc<Worker>>,
    metrics: Option<Rc<Metrics>>,
    /// The instance that answers the health listener's readiness probe (root id
    /// `healthlake_relay_readiness`): same configuration, no fetching, no writes.
    readiness: bool,
}

impl Context for RelayRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let (Some(worker), Some(metrics)) = (self.worker.clone(), self.metrics.clone()) else {
            return;
        };
        let host = WasmHost { metrics: &metrics };
        if let Ok(mut provider) = worker.credentials.try_borrow_mut() {
            if provider.awaits(token_id) {
                let (status, body) = envoy::call_answer(body_size, MAX_ANSWER_BYTES);
                provider.on_answer(&host, token_id, status, &body);
                drop(provider);
                crate::flow::waiters::resolve(&host, &worker);
                return;
            }
        }
        if let Ok(mut discovery) = worker.discovery.try_borrow_mut() {
            if discovery.awaits(token_id) {
                let (status, body) = envoy::call_answer(body_size, MAX_STATEMENT_BYTES);
                discovery.on_answer(&host, token_id, status, &body);
            }
        };
    }
}

impl RootContext for RelayRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        logger::follow_host_level();
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let Some(bytes) = host::buffer(
            abi::Buffer::PluginConfiguration,
            0,
            plugin_configuration_size,
        ) else {
            return false;
        };
        self.readiness = host::property(&["plugin_root_id"]).as_deref()
            == Some(crate::readiness::ROOT_ID.as_bytes());
        let worker = match Worker::start(&bytes, |name| std::env::var(name).ok(), self.readiness) {
            Ok(w) => w,
            Err(e) => {
                log_error(&format!("healthlake-relay: {e}"));
                return false;
            }
        };
        self.metrics = Some(Rc::new(Metrics::define(&worker.credential_sources())));
        // The probe only reads what the writes' instance publishes. The first fetch happens at
        // the first tick, not here: Envoy configures a root context it then discards, which
        // would cancel the call while it holds the lock.
        if worker.needs_timer() && !self.readiness {
            if let Err(s) = abi::set_tick_period(TICK) {
                log_error(&format!(
                    "healthlake-relay: cannot start the timer (credentials, capabilities): {s:?}"
                ));
                return false;
            }
        }
        self.worker = Some(Rc::new(worker));
        true
    }

    fn on_tick(&mut self) {
        let (Some(worker), Some(metrics)) = (self.worker.clone(), self.metrics.clone()) else {
            return;
        };
        let host = WasmHost { metrics: &metrics };
        if let Ok(mut provider) = worker.credentials.try_borrow_mut() {
            provider.tick(&host);
        }
        crate::flow::waiters::resolve(&host, &worker);
        if let Ok(mut discovery) = worker.discovery.try_borrow_mut() {
            let signing = match (host::now(), worker.credentials.try_borrow()) {
                (Some(now), Ok(provider)) => match provider.for_signing(now) {
                    ForSigning::Ready(creds, _) => Some(creds),
                    _ => None,
                },
                _ => None,
            };
            discovery.tick(&host, signing.as_deref());
        };
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let metrics = self
            .metrics
            .clone()
            .unwrap_or_else(|| Rc::new(Metrics::define(&[])));
        if self.readiness {
            return Some(Box::new(readiness::ReadinessHttp {
                worker: self.worker.clone(),
                metrics,
            }));
        }
        Some(Box::new(http::RelayHttp::new(
            self.worker.clone(),
            metrics,
            context_id,
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
