//! Envoy stats defined by the relay (Envoy prefixes Wasm stats with `wasmcustom.`):
//! - `healthlake_relay.outcome.<outcome>`: one counter per outcome;
//! - `healthlake_relay.type.<Type>.outcome.<outcome>`: per resource type and outcome, defined
//!   the first time a type meets an outcome (types are checked FHIR R4 names, so the set is
//!   bounded);
//! - `healthlake_relay.credentials.refresh_{attempted,succeeded,failed}`: refreshes of the
//!   credentials (each a fetch from the source, then AssumeRole when a role is assumed on top);
//! - `healthlake_relay.credentials.source.<source>.refresh_{attempted,succeeded,failed}`: the same
//!   per source of the fetch (`web-identity`, `container`, `imds`, `assume-role`), defined for the
//!   configured ones;
//! - `healthlake_relay.credentials.expiry_seconds` (gauge): until the current ones expire.
//! - `healthlake_relay.capabilities.fetch_{attempted,succeeded,failed}`: reads of HealthLake's
//!   CapabilityStatement (`crate::discovery`);
//! - `healthlake_relay.capabilities.discovered` (gauge): 1 while a CapabilityStatement decides
//!   which types are supported, 0 while the relay learns them from HealthLake's answers;
//! - `healthlake_relay.capabilities.update_types` (gauge): the types it lists with update.
//!
//! `envoy.yaml`'s `stats_tags` turn the type, outcome and source into Prometheus labels:
//! `healthlake_relay_outcome{outcome="delivered"}`,
//! `healthlake_relay_type_outcome{resource_type="Patient",outcome="delivered"}`.

use super::abi::{self, MetricKind};
use crate::credentials::provider::Event;
use crate::fhir;
use crate::outcome::Outcome;
use std::cell::RefCell;

const OUTCOMES: usize = Outcome::ALL.len();

pub struct Metrics {
    outcome: [Option<u32>; OUTCOMES],
    refresh: [Option<u32>; 3],
    /// Per source: its name and its three counters.
    by_source: Vec<(&'static str, [Option<u32>; 3])>,
    expiry_seconds: Option<u32>,
    discovery: [Option<u32>; 3],
    /// `capabilities.discovered` and `capabilities.update_types`.
    capabilities: [Option<u32>; 2],
    /// Per (type, outcome): `None` not defined yet, `Some(None)` definition failed.
    by_type: RefCell<Vec<Option<Option<u32>>>>,
}

fn define(name: &str) -> Option<u32> {
    abi::define_metric(MetricKind::Counter, name).ok()
}

impl Metrics {
    /// Defines the stats; `sources` are the credential sources a fetch calls.
    pub fn define(sources: &[&'static str]) -> Metrics {
        let mut outcome = [None; OUTCOMES];
        for (slot, o) in outcome.iter_mut().zip(Outcome::ALL) {
            *slot = define(&format!("healthlake_relay.outcome.{}", o.stat_name()));
        }
        const EVENTS: [&str; 3] = ["attempted", "succeeded", "failed"];
        let refresh =
            EVENTS.map(|what| define(&format!("healthlake_relay.credentials.refresh_{what}")));
        let by_source = sources
            .iter()
            .map(|source| {
                (
                    *source,
                    EVENTS.map(|what| {
                        define(&format!(
                            "healthlake_relay.credentials.source.{source}.refresh_{what}"
                        ))
                    }),
                )
            })
            .collect();
        let expiry_seconds = abi::define_metric(
            MetricKind::Gauge,
            "healthlake_relay.credentials.expiry_seconds",
        )
        .ok();
        let discovery =
            EVENTS.map(|what| define(&format!("healthlake_relay.capabilities.fetch_{what}")));
        let capabilities = ["discovered", "update_types"].map(|name| {
            abi::define_metric(
                MetricKind::Gauge,
                &format!("healthlake_relay.capabilities.{name}"),
            )
            .ok()
        });
        Metrics {
            outcome,
            refresh,
            by_source,
            expiry_seconds,
            discovery,
            capabilities,
            by_type: RefCell::new(vec![None; fhir::R4_RESOURCE_TYPES.len() * OUTCOMES]),
        }
    }

    fn bump(id: Option<&Option<u32>>) {
        if let Some(Some(id)) = id {
            let _ = abi::increment_metric(*id, 1);
        }
    }

    /// Counts a read of HealthLake's CapabilityStatement.
    pub fn discovery(&self, event: Event) {
        Self::bump(self.discovery.get(event_index(event)));
    }

    /// Whether a CapabilityStatement is in use, and how many types it lists with update.
    pub fn capabilities_in_use(&self, update_types: Option<usize>) {
        let [discovered, types] = self.capabilities;
        if let Some(id) = discovered {
            let _ = abi::record_metric(id, u64::from(update_types.is_some()));
        }
        if let Some(id) = types {
            let _ = abi::record_metric(id, update_types.map_or(0, |n| n as u64));
        }
    }

    /// Counts a refresh event, of the whole refresh (`source` `None`) or of one source.
    pub fn refresh(&self, event: Event, source: Option<&str>) {
        let counters = match source {
            None => Some(&self.refresh),
            Some(name) => self
                .by_source
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, c)| c),
        };
        Self::bump(counters.and_then(|c| c.get(event_index(event))));
    }

    /// Seconds until the current temporary credentials expire.
    pub fn credentials_expiry_seconds(&self, seconds: u64) {
        if let Some(id) = self.expiry_seconds {
            let _ = abi::record_metric(id, seconds);
        }
    }

    /// Counts one request with `outcome`, and per type when the type is known.
    pub fn count(&self, outcome: Outcome, resource_type: Option<&str>) {
        if let Some(Some(id)) = self.outcome.get(outcome.index()) {
            let _ = abi::increment_metric(*id, 1);
        }
        let Some(index) = resource_type.and_then(fhir::type_index) else {
            return;
        };
        let slot = index * OUTCOMES + outcome.index();
        let Ok(mut table) = self.by_type.try_borrow_mut() else {
            return;
        };
        let Some(entry) = table.get_mut(slot) else {
            return;
        };
        let id = *entry.get_or_insert_with(|| {
            let name = fhir::R4_RESOURCE_TYPES
                .get(index)
                .copied()
                .unwrap_or("unknown");
            define(&format!(
                "healthlake_relay.type.{name}.outcome.{}",
                outcome.stat_name()
            ))
        });
        if let Some(id) = id {
            let _ = abi::increment_metric(id, 1);
        }
    }
}

fn event_index(event: Event) -> usize {
    match event {
        Event::Attempted => 0,
        Event::Succeeded => 1,
        Event::Failed => 2,
    }
}
