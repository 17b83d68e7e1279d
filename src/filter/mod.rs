//! The glue between Envoy's proxy-wasm host and the core: the only code that touches the ABI.
//!
//! It calls `proxy_wasm::hostcalls` directly (they return `Result`) instead of the SDK's context
//! helpers (which unwrap), so that every host error has a handled path.

mod host;
mod http;
mod metrics;
mod response;
mod shared;

use crate::config::Config;
use crate::credentials::{Credentials, Unavailable};
use host::log_error;
use metrics::Metrics;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(RelayRoot::default()) });
}}

/// What every request of one worker shares: set once at configuration.
pub(crate) struct Shared {
    pub config: Config,
    pub credentials: Result<Credentials, Unavailable>,
    pub metrics: Metrics,
}

#[derive(Default)]
struct RelayRoot {
    shared: Option<Rc<Shared>>,
}

impl Context for RelayRoot {}

impl RootContext for RelayRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        // Follow Envoy's own level for the wasm component, so disabled levels cost no host call.
        if let Ok(level) = proxy_wasm::hostcalls::get_log_level() {
            proxy_wasm::set_log_level(level);
        }
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = match proxy_wasm::hostcalls::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        ) {
            Ok(b) => b.unwrap_or_default(),
            Err(status) => {
                log_error(&format!(
                    "healthlake-relay: cannot read the plugin configuration: {status:?}"
                ));
                return false;
            }
        };
        let config = match Config::from_json(&bytes) {
            Ok(c) => c,
            Err(e) => {
                log_error(&format!("healthlake-relay: {e}"));
                return false;
            }
        };
        let credentials = Credentials::from_env(|name| std::env::var(name).ok());
        match &credentials {
            Ok(c) => log::info!(
                "healthlake-relay: forwarding to {} data store {} in {}, signing with access key …{}{}",
                config.healthlake_host,
                config.datastore_id,
                config.region,
                c.key_hint(),
                if c.session_token.is_some() { " (temporary)" } else { "" },
            ),
            Err(e) => log::warn!(
                "healthlake-relay: {e}; every write will be answered 503 no-credentials and nothing forwarded"
            ),
        }
        let metrics = Metrics::define();
        self.shared = Some(Rc::new(Shared {
            config,
            credentials,
            metrics,
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(http::RelayHttp::new(self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
