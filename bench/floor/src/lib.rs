//! The benchmark's floor, never shipped: the least a proxy-wasm filter must do to sign a FHIR
//! write for HealthLake over its body, and nothing else.
//!
//! It holds the request headers until the body has arrived, hashes the body chunk by chunk, signs
//! with the relay's own signer (`healthlake_relay::signing`, cached signing key) and rewrites
//! `/{Type}/{id}` to HealthLake's path. No checks of the request or the resource, no verdicts,
//! no access-log state, no stats, no version guard, no STS: what the relay costs beyond this is
//! the price of those, and what this costs beyond Envoy's native signer is the price of signing
//! in a Wasm VM at all. `make bench` runs it as set-up (d), with the relay's own plugin
//! configuration (`region`, `datastore_id`, `healthlake_host`) and the AWS_* environment.

use healthlake_relay::credentials::Credentials;
use healthlake_relay::signing::{sign_request_cached, KeyCache, PayloadHasher, SigningInput};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use std::cell::RefCell;
use std::rc::Rc;

const FHIR_JSON: &str = "application/fhir+json";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { setup: None }) });
}}

#[derive(serde::Deserialize)]
struct PluginConfig {
    region: String,
    datastore_id: String,
    healthlake_host: String,
}

struct Setup {
    region: String,
    host: String,
    prefix: String,
    credentials: Credentials,
    keys: RefCell<KeyCache>,
}

struct Root {
    setup: Option<Rc<Setup>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let Ok(Some(bytes)) = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
        else {
            return false;
        };
        let Ok(config) = serde_json::from_slice::<PluginConfig>(&bytes) else {
            return false;
        };
        let Ok(credentials) = Credentials::from_env(|name| std::env::var(name).ok()) else {
            return false;
        };
        self.setup = Some(Rc::new(Setup {
            region: config.region,
            host: config.healthlake_host,
            prefix: format!("/datastore/{}/r4", config.datastore_id),
            credentials,
            keys: RefCell::new(KeyCache::default()),
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor {
            setup: self.setup.clone(),
            hasher: PayloadHasher::new(),
            hashed: 0,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Floor {
    setup: Option<Rc<Setup>>,
    hasher: PayloadHasher,
    hashed: usize,
}

impl Context for Floor {}

impl Floor {
    fn refuse(&self) -> Action {
        let _ = hostcalls::send_http_response(500, vec![], Some(b"floor: cannot sign"));
        Action::Pause
    }

    fn sign_and_rewrite(&mut self) -> Option<()> {
        let setup = self.setup.as_ref()?;
        let path = hostcalls::get_map_value(MapType::HttpRequestHeaders, ":path").ok()??;
        let upstream_path = format!("{}{path}", setup.prefix);
        let payload = std::mem::take(&mut self.hasher).finish_hex();
        let input = SigningInput {
            method: "PUT",
            host: &setup.host,
            path: &upstream_path,
            content_type: Some(FHIR_JSON),
            payload_sha256: &payload,
            region: &setup.region,
            service: "healthlake",
            time: hostcalls::get_current_time().ok()?,
        };
        let mut keys = setup.keys.try_borrow_mut().ok()?;
        let headers = sign_request_cached(&input, &setup.credentials, &mut keys).ok()?;
        let set = |name: &str, value: &str| {
            hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value)).ok()
        };
        set(":path", &upstream_path)?;
        set(":authority", &setup.host)?;
        set("content-type", FHIR_JSON)?;
        for (name, value) in &headers {
            set(name, value)?;
        }
        Some(())
    }
}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        if end_of_stream {
            return self.refuse(); // The floor only signs PUTs with a body.
        }
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if body_size > self.hashed {
            let start = self.hashed;
            match hostcalls::get_buffer(BufferType::HttpRequestBody, start, body_size - start) {
                Ok(Some(chunk)) => self.hasher.update(&chunk),
                _ => return self.refuse(),
            }
            self.hashed = body_size;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        match self.sign_and_rewrite() {
            Some(()) => Action::Continue,
            None => self.refuse(),
        }
    }
}
