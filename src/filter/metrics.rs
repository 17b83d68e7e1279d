//! Envoy stats defined by the relay. Envoy prefixes Wasm stats with `wasmcustom.`; the Prometheus
//! endpoint shows `healthlake_relay.outcome.delivered` as
//! `envoy_wasmcustom_healthlake_relay_outcome_delivered`.

use crate::outcome::Outcome;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

pub struct Metrics {
    outcome: [Option<u32>; Outcome::ALL.len()],
}

impl Metrics {
    pub fn define() -> Metrics {
        let mut outcome = [None; Outcome::ALL.len()];
        for (slot, o) in outcome.iter_mut().zip(Outcome::ALL) {
            let name = format!("healthlake_relay.outcome.{}", o.as_str().replace('-', "_"));
            *slot = hostcalls::define_metric(MetricType::Counter, &name).ok();
        }
        Metrics { outcome }
    }

    pub fn count(&self, outcome: Outcome) {
        if let Some(Some(id)) = self.outcome.get(outcome.index()) {
            let _ = hostcalls::increment_metric(*id, 1);
        }
    }
}
