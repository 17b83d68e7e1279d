//! What every request of one Envoy worker shares: the configuration, how callers are checked, the
//! credentials provider, discovery, the requests held for credentials, the signing key, the body
//! budget. Built once per worker from the plugin's configuration.

use crate::body_budget::Budget;
use crate::config::{Config, InboundAuth};
use crate::credentials::fetch::{Base, Plan, ASSUME_ROLE};
use crate::credentials::provider::Provider;
use crate::discovery::Discovery;
use crate::flow::{Forwarded, Waiter};
use crate::inbound_auth::Tokens;
use crate::signing::KeyCache;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// How this worker checks callers.
pub enum Inbound {
    Bearer(Tokens),
    MutualTls,
    Open,
}

pub struct Worker {
    pub config: Config,
    pub inbound: Inbound,
    /// The credentials provider, which also holds the writes waiting for the first credentials.
    pub credentials: RefCell<Provider<Waiter>>,
    /// What HealthLake's CapabilityStatement says it supports, read in the background.
    pub discovery: RefCell<Discovery>,
    /// Requests the root context signed and resumed, by context id, for their response side.
    pub resumed: RefCell<HashMap<u32, Box<Forwarded>>>,
    /// The derived SigV4 key, reused for a day per credentials.
    pub signing_keys: RefCell<KeyCache>,
    /// Bytes of request bodies this worker holds now, and the most it may (body_budget_bytes).
    pub body_budget: Rc<Budget>,
}

impl Worker {
    /// Builds the worker from the plugin configuration; `env` reads the plugin's environment.
    /// `readiness`: the instance that answers the readiness probe (no warning for an open
    /// listener, no start-up line). The error is the one line that explains why the plugin does
    /// not start.
    pub fn start(
        configuration: &[u8],
        env: impl Fn(&str) -> Option<String>,
        readiness: bool,
    ) -> Result<Worker, String> {
        let config = Config::from_json(configuration).map_err(|e| e.to_string())?;
        let inbound = match config.inbound_auth {
            InboundAuth::Bearer => {
                let value = env("RELAY_INBOUND_TOKENS").unwrap_or_default();
                match Tokens::from_sources(&value, &config.inbound_token_digests) {
                    Ok(tokens) => Inbound::Bearer(tokens),
                    Err(e) => {
                        return Err(format!(
                            "refusing to start: inbound_auth is \"bearer\" but {e}. Give Smile CDR \
                             a token (RELAY_INBOUND_TOKENS, passed through \
                             vm_config.environment_variables, or its SHA-256 digest in \
                             inbound_token_sha256), or protect the listener with mutual TLS \
                             (inbound_auth \"mtls\")."
                        ))
                    }
                }
            }
            InboundAuth::MutualTls => Inbound::MutualTls,
            InboundAuth::None if readiness => Inbound::Open,
            InboundAuth::None => {
                log::warn!(
                    "healthlake-relay: inbound_auth is \"none\": anyone who reaches the listener \
                     can write to HealthLake with the relay's credentials (local demo only)"
                );
                Inbound::Open
            }
        };
        let plan = Plan::from_config(&config.credentials, &config.region, env)
            .map_err(|e| format!("refusing to start: {e}"))?;
        if !readiness {
            announce(&config, &plan);
        }
        let provider = Provider::new(
            plan,
            config.credentials.refresh_margin_seconds,
            config.credentials.first_fetch_wait_ms,
        );
        let body_budget =
            Budget::new(usize::try_from(config.body_budget_bytes).unwrap_or(usize::MAX));
        Ok(Worker {
            discovery: RefCell::new(Discovery::new(&config)),
            config,
            inbound,
            credentials: RefCell::new(provider),
            resumed: RefCell::new(HashMap::new()),
            signing_keys: RefCell::new(KeyCache::default()),
            body_budget,
        })
    }

    /// The credential sources a fetch calls, for their stats.
    pub fn credential_sources(&self) -> Vec<&'static str> {
        let Ok(provider) = self.credentials.try_borrow() else {
            return Vec::new();
        };
        let mut sources = vec![provider.plan().base.name()];
        if provider.plan().role.is_some() {
            sources.push(ASSUME_ROLE);
        }
        sources
    }

    /// Whether a timer must drive the worker: credentials to fetch, a CapabilityStatement to read.
    pub fn needs_timer(&self) -> bool {
        let fetches = self.credentials.try_borrow().is_ok_and(|p| p.fetches());
        let discovers = self.discovery.try_borrow().is_ok_and(|d| d.enabled());
        fetches || discovers
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
