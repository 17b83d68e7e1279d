//! The glue between Envoy's proxy-wasm host and the core: the only code that touches the ABI.
//!
//! It makes its host calls through [`abi`], never through the SDK's wrappers (which panic on a
//! header value that is not UTF-8 and on host statuses they did not foresee), so that every host
//! answer, and any bytes a client sends, has a handled path.

mod abi;
mod credentials;
mod discovery;
mod host;
mod http;
mod logger;
mod metrics;
mod readiness;
mod response;
mod shared;

use crate::body_budget::Budget;
use crate::config::{Config, InboundAuth};
use crate::credentials::fetch::{Base, Plan, ASSUME_ROLE};
use crate::credentials::provider::ForSigning;
use crate::discovery::Discovery;
use crate::inbound_auth::Tokens;
use credentials::{CredentialProvider, WasmHost};
use host::log_error;
use http::Forwarded;
use metrics::Metrics;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// How often each worker syncs the credentials and the supported types, and looks after waiting
/// requests.
const TICK: Duration = Duration::from_millis(250);

proxy_wasm::main! {{
    logger::install();
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(RelayRoot::default()) });
}}

/// How this worker checks callers.
pub(crate) enum Inbound {
    Bearer(Tokens),
    MutualTls,
    Open,
}

/// What every request of one worker shares with its root context.
pub(crate) struct Shared {
    pub config: Config,
    pub inbound: Inbound,
    /// The credentials provider, which also holds the writes waiting for the first credentials.
    pub credentials: RefCell<CredentialProvider>,
    /// What HealthLake's CapabilityStatement says it supports, read in the background.
    pub discovery: RefCell<Discovery>,
    pub metrics: Metrics,
    /// Requests the root context signed and resumed, by context id, for their response side.
    pub resumed: RefCell<HashMap<u32, Box<Forwarded>>>,
    /// The derived SigV4 key, reused for a day per credentials.
    pub signing_keys: RefCell<crate::signing::KeyCache>,
    /// Bytes of request bodies this worker holds now, and the most it may (body_budget_bytes).
    pub body_budget: Rc<Budget>,
}

#[derive(Default)]
struct RelayRoot {
    shared: Option<Rc<Shared>>,
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
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let handled = match shared.credentials.try_borrow_mut() {
            Ok(mut provider) => {
                credentials::on_response(&mut provider, &shared.metrics, token_id, body_size)
            }
            Err(_) => false,
        };
        if handled {
            http::resolve_waiters(&shared);
            return;
        }
        if let Ok(mut discovery) = shared.discovery.try_borrow_mut() {
            let wasm_host = WasmHost {
                metrics: &shared.metrics,
            };
            discovery::on_response(&mut discovery, &wasm_host, token_id, body_size);
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
        let config = match Config::from_json(&bytes) {
            Ok(c) => c,
            Err(e) => {
                log_error(&format!("healthlake-relay: {e}"));
                return false;
            }
        };
        let inbound = match config.inbound_auth {
            InboundAuth::Bearer => {
                let value = std::env::var("RELAY_INBOUND_TOKENS").unwrap_or_default();
                match Tokens::from_sources(&value, &config.inbound_token_digests) {
                    Ok(tokens) => Inbound::Bearer(tokens),
                    Err(e) => {
                        log_error(&format!(
                            "healthlake-relay: refusing to start: inbound_auth is \"bearer\" but {e}. \
                             Give Smile CDR a token (RELAY_INBOUND_TOKENS, passed through \
                             vm_config.environment_variables, or its SHA-256 digest in \
                             inbound_token_sha256), or protect the listener with mutual TLS \
                             (inbound_auth \"mtls\")."
                        ));
                        return false;
                    }
                }
            }
            InboundAuth::MutualTls => Inbound::MutualTls,
            InboundAuth::None if self.readiness => Inbound::Open,
            InboundAuth::None => {
                log::warn!(
                    "healthlake-relay: inbound_auth is \"none\": anyone who reaches the listener can \
                     write to HealthLake with the relay's credentials (local demo only)"
                );
                Inbound::Open
            }
        };
        let plan = match Plan::from_config(&config.credentials, &config.region, |name| {
            std::env::var(name).ok()
        }) {
            Ok(plan) => plan,
            Err(e) => {
                log_error(&format!("healthlake-relay: refusing to start: {e}"));
                return false;
            }
        };
        if !self.readiness {
            announce(&config, &plan);
        }
        let mut sources = vec![plan.base.name()];
        if plan.role.is_some() {
            sources.push(ASSUME_ROLE);
        }
        let fetches = plan.fetches();
        let discovery = Discovery::new(&config);
        let discovers = discovery.enabled();
        let provider = CredentialProvider::new(
            plan,
            config.credentials.refresh_margin_seconds,
            config.credentials.first_fetch_wait_ms,
        );
        let body_budget =
            Budget::new(usize::try_from(config.body_budget_bytes).unwrap_or(usize::MAX));
        let shared = Rc::new(Shared {
            config,
            inbound,
            credentials: RefCell::new(provider),
            discovery: RefCell::new(discovery),
            metrics: Metrics::define(&sources),
            resumed: RefCell::new(HashMap::new()),
            signing_keys: RefCell::new(crate::signing::KeyCache::default()),
            body_budget,
        });
        self.shared = Some(Rc::clone(&shared));
        // The probe only reads what the writes' instance publishes.
        if (fetches || discovers) && !self.readiness {
            // The first fetch happens at the first tick, not here: Envoy configures a root
            // context it then discards, which would cancel the call while it holds the lock.
            if let Err(s) = abi::set_tick_period(TICK) {
                log_error(&format!(
                    "healthlake-relay: cannot start the timer (credentials, capabilities): {s:?}"
                ));
                return false;
            }
        }
        true
    }

    fn on_tick(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let wasm_host = WasmHost {
            metrics: &shared.metrics,
        };
        if let Ok(mut provider) = shared.credentials.try_borrow_mut() {
            provider.tick(&wasm_host);
        }
        http::resolve_waiters(&shared);
        if let Ok(mut discovery) = shared.discovery.try_borrow_mut() {
            if discovery.enabled() {
                let signing = match (host::now(), shared.credentials.try_borrow()) {
                    (Some(now), Ok(provider)) => match provider.for_signing(now) {
                        ForSigning::Ready(creds, _) => Some(creds),
                        _ => None,
                    },
                    _ => None,
                };
                discovery.tick(&wasm_host, signing.as_deref());
            }
        };
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        if self.readiness {
            return Some(Box::new(readiness::ReadinessHttp {
                shared: self.shared.clone(),
            }));
        }
        Some(Box::new(http::RelayHttp::new(
            self.shared.clone(),
            context_id,
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The start-up line: where writes go, and what signs them (never a secret).
fn announce(config: &Config, plan: &Plan) {
    let signer = match (&plan.base, &plan.role) {
        (Base::Environment(Err(e)), _) => {
            log::warn!(
                "healthlake-relay: {e}; every write will be answered 503 no-credentials and \
                 nothing forwarded"
            );
            return;
        }
        (Base::Environment(Ok(c)), None) => format!(
            "access key …{}{} from the environment",
            c.key_hint(),
            if c.session_token.is_some() {
                " (temporary)"
            } else {
                ""
            }
        ),
        (Base::Environment(Ok(c)), Some(role)) => format!(
            "temporary credentials of {} (session {}), assumed with access key …{} from the \
             environment",
            role.role_arn,
            role.session_name,
            c.key_hint()
        ),
        (_, Some(role)) => format!(
            "temporary credentials of {} (session {}), assumed with credentials from {}",
            role.role_arn,
            role.session_name,
            plan.base.name()
        ),
        (Base::WebIdentity(w), None) => format!(
            "temporary credentials of {} from web identity (session {})",
            w.role_arn, w.session_name
        ),
        (base, None) => format!("temporary credentials from {}", base.name()),
    };
    log::info!(
        "healthlake-relay: forwarding to {} data store {} in {}, signing with {signer} \
         (credentials source: {})",
        config.healthlake_host,
        config.datastore_id,
        config.region,
        plan.label()
    );
}
