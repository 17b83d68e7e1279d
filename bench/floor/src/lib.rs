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
//!
//! `make bench-instructions INSTRUCTIONS_ARGS="--probes"` also runs it with `probe` and
//! `probe_repeat` in that configuration: one kind of host call made `probe_repeat` times more at
//! each request's headers, so that the difference in instructions is the cost of one such call
//! (made through the proxy-wasm SDK's `hostcalls`, as the rest of the floor; the relay makes its
//! own through `filter/abi.rs`, with slightly less work in the VM).

use healthlake_relay::credentials::Credentials;
use healthlake_relay::signing::{sign_request_cached, KeyCache, PayloadHasher, SigningInput};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
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
    #[serde(default)]
    probe: Option<Probe>,
    #[serde(default)]
    probe_repeat: usize,
}

/// A host call whose cost `--probes` measures (scripts/instructions.py).
#[derive(serde::Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum Probe {
    /// `proxy_get_current_time_nanoseconds`: a call that returns no data.
    Clock,
    /// A request header that is absent: the lookup, nothing returned.
    HeaderAbsent,
    /// `content-type`: the host allocates the value in the VM (a call back into it) and copies.
    HeaderPresent,
    /// The `destination.address` property (the relay reads it without inbound authentication).
    Property,
    /// A shared-data key that is absent.
    SharedDataAbsent,
    /// A shared-data key of 784 bytes (a version-guard shard of 16 entries).
    SharedDataPresent,
    /// One request header replaced.
    SetHeader,
    /// A new filter-state value each time (as the relay's access-log values).
    FilterState,
    /// A counter incremented.
    Metric,
}

/// Filter-state keys for [`Probe::FilterState`]: each call sets a new one.
const PROBE_KEYS: [&str; 16] = [
    "probe_0", "probe_1", "probe_2", "probe_3", "probe_4", "probe_5", "probe_6", "probe_7",
    "probe_8", "probe_9", "probe_10", "probe_11", "probe_12", "probe_13", "probe_14", "probe_15",
];
const PROBE_SHARED_KEY: &str = "relay_floor_probe";
const PROBE_SHARED_BYTES: usize = 784;

struct Setup {
    region: String,
    host: String,
    prefix: String,
    credentials: Credentials,
    keys: RefCell<KeyCache>,
    probe: Option<Probe>,
    probe_repeat: usize,
    probe_metric: u32,
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
        let mut probe_metric = 0;
        match config.probe {
            Some(Probe::SharedDataPresent) => {
                let value = vec![b'x'; PROBE_SHARED_BYTES];
                if hostcalls::set_shared_data(PROBE_SHARED_KEY, Some(&value), None).is_err() {
                    return false;
                }
            }
            Some(Probe::Metric) => {
                match hostcalls::define_metric(MetricType::Counter, "relay_floor_probe") {
                    Ok(id) => probe_metric = id,
                    Err(_) => return false,
                }
            }
            _ => {}
        }
        self.setup = Some(Rc::new(Setup {
            region: config.region,
            host: config.healthlake_host,
            prefix: format!("/datastore/{}/r4", config.datastore_id),
            credentials,
            keys: RefCell::new(KeyCache::default()),
            probe: config.probe,
            probe_repeat: config.probe_repeat.min(PROBE_KEYS.len()),
            probe_metric,
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

/// The probe's host call, `repeat` times; results are passed to `black_box` so that none is
/// optimised away. False if a call failed, or did not return the bytes it is meant to: the
/// request is then refused, so that a probe that measures nothing cannot pass for one that does.
fn probe(setup: &Setup) -> bool {
    let Some(probe) = setup.probe else {
        return true;
    };
    for key in PROBE_KEYS.iter().take(setup.probe_repeat) {
        let done = match probe {
            Probe::Clock => std::hint::black_box(hostcalls::get_current_time()).is_ok(),
            Probe::HeaderAbsent => matches!(
                std::hint::black_box(hostcalls::get_map_value_bytes(
                    MapType::HttpRequestHeaders,
                    "x-relay-floor-probe-absent",
                )),
                Ok(None)
            ),
            Probe::HeaderPresent => matches!(
                std::hint::black_box(hostcalls::get_map_value_bytes(
                    MapType::HttpRequestHeaders,
                    "content-type",
                )),
                Ok(Some(_))
            ),
            Probe::Property => matches!(
                std::hint::black_box(hostcalls::get_property(vec!["destination", "address"])),
                Ok(Some(_))
            ),
            Probe::SharedDataAbsent => matches!(
                std::hint::black_box(hostcalls::get_shared_data("relay_floor_probe_absent")),
                Ok((None, _))
            ),
            Probe::SharedDataPresent => matches!(
                std::hint::black_box(hostcalls::get_shared_data(PROBE_SHARED_KEY)),
                Ok((Some(v), _)) if v.len() == PROBE_SHARED_BYTES
            ),
            Probe::SetHeader => hostcalls::set_map_value(
                MapType::HttpRequestHeaders,
                "x-relay-floor-probe",
                Some("1"),
            )
            .is_ok(),
            Probe::FilterState => hostcalls::set_property(vec![*key], Some(b"PUT")).is_ok(),
            Probe::Metric => hostcalls::increment_metric(setup.probe_metric, 1).is_ok(),
        };
        if !done {
            return false;
        }
    }
    true
}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        if let Some(setup) = &self.setup {
            if !probe(setup) {
                return self.refuse();
            }
        }
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
