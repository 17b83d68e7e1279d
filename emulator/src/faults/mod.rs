//! Fault injection: misbehaving the way HealthLake does, on demand.
//!
//! - [`kind`]: the faults, their names and what each answers.
//! - [`settings`]: the settings tests send (`PUT /_emulator/faults`) and their validation.
//! - [`metadata`]: the `metadata` setting, how the CapabilityStatement endpoint misbehaves.
//! - [`rng`], [`bucket`]: the seeded generator behind the rates and the rate limiter.
//! - [`queue`]: the plain `next` queue of the STS proxy's and the credential endpoints' faults,
//!   generic over their fault kinds.
//!
//! [`FaultInjector`] holds the settings and the running state (the `next` queue, the generator,
//! the token bucket, the counters) and decides, per verified data-plane request, what to inject.

pub mod bucket;
pub mod kind;
pub mod metadata;
pub mod queue;
pub mod rng;
pub mod settings;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde::Serialize;

pub use bucket::TokenBucket;
pub use kind::{unsupported_type_diagnostics, Fault, FaultReply, ThrottleForm};
pub use metadata::MetadataFault;
pub use rng::SplitMix64;
pub use settings::FaultSettings;

/// The statuses `error_rate` picks from.
const RANDOM_SERVER_ERRORS: [StatusCode; 4] = [
    StatusCode::INTERNAL_SERVER_ERROR,
    StatusCode::BAD_GATEWAY,
    StatusCode::SERVICE_UNAVAILABLE,
    StatusCode::GATEWAY_TIMEOUT,
];

/// What to do with one verified data-plane request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The fault injected before normal handling, if any.
    pub fault: Option<Fault>,
    /// How long to wait before answering (`latency_ms` plus a `delay:N` entry).
    pub delay: Duration,
}

/// The answer of `GET /_emulator/faults`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultStatus {
    /// The settings in force; `next` holds only the entries not consumed yet.
    pub settings: FaultSettings,
    /// How many faults of each kind were injected (kinds never injected are left out).
    pub injected: BTreeMap<String, u64>,
}

/// The fault settings and the state of their injection.
#[derive(Clone, Debug)]
pub struct FaultInjector {
    /// The settings, with `next` moved to `queue`.
    settings: FaultSettings,
    queue: VecDeque<Fault>,
    rng: SplitMix64,
    bucket: Option<TokenBucket>,
    /// Rate-driven throttles alternate between the 429 and 400 forms, 429 first.
    next_throttle_is_400: bool,
    injected: BTreeMap<String, u64>,
}

impl Default for FaultInjector {
    fn default() -> Self {
        FaultInjector::new(FaultSettings::default())
    }
}

impl FaultInjector {
    pub fn new(settings: FaultSettings) -> Self {
        let mut injector = FaultInjector {
            settings: FaultSettings::default(),
            queue: VecDeque::new(),
            rng: SplitMix64::new(0),
            bucket: None,
            next_throttle_is_400: false,
            injected: BTreeMap::new(),
        };
        injector.replace(settings);
        injector
    }

    /// Puts new settings in force: the queue, the generator (from the seed), the token bucket
    /// and the throttle alternation start afresh. The counters are kept.
    pub fn replace(&mut self, mut settings: FaultSettings) {
        self.queue = std::mem::take(&mut settings.next).into();
        self.rng = SplitMix64::new(settings.seed.unwrap_or(0));
        self.bucket = settings.throttle_above_rps.map(TokenBucket::new);
        self.next_throttle_is_400 = false;
        self.settings = settings;
    }

    /// Puts `settings` in force and forgets the counters.
    pub fn reset(&mut self, settings: FaultSettings) {
        self.replace(settings);
        self.injected.clear();
    }

    /// The settings in force, `next` holding the entries not consumed yet.
    pub fn settings(&self) -> FaultSettings {
        FaultSettings {
            next: self.queue.iter().copied().collect(),
            ..self.settings.clone()
        }
    }

    pub fn status(&self) -> FaultStatus {
        FaultStatus {
            settings: self.settings(),
            injected: self.injected.clone(),
        }
    }

    /// `latency_ms` as a duration.
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.settings.latency_ms.unwrap_or(0))
    }

    /// `unsupported_types`.
    pub fn unsupported_types(&self) -> &[String] {
        &self.settings.unsupported_types
    }

    /// The `metadata` setting.
    pub fn metadata(&self) -> Option<MetadataFault> {
        self.settings.metadata
    }

    pub fn is_unsupported(&self, resource_type: &str) -> bool {
        self.settings
            .unsupported_types
            .iter()
            .any(|t| t == resource_type)
    }

    /// Counts one injected fault.
    pub fn count(&mut self, fault: &Fault) {
        let n = self.injected.entry(fault.kind()).or_insert(0);
        *n = n.saturating_add(1);
    }

    /// Decides for one verified data-plane request arriving at `now`.
    ///
    /// Every call takes a token from the bucket (when rate limiting is on) and makes the same
    /// two draws from the generator, so the n-th request after the settings were put in force
    /// always sees the same draws. Then the first of these applies: a queued `next` entry, the
    /// rate limit, or the rates (one draw split into `reset_rate`, `error_rate`,
    /// `throttle_rate`, in that order; the other picks the 5xx status).
    pub fn decide(&mut self, now: Instant) -> Decision {
        let over_rate = self.bucket.as_mut().is_some_and(|b| !b.try_take(now));
        let roll = self.rng.next_f64();
        let pick = self.rng.next_u64();
        let fault = if let Some(queued) = self.queue.pop_front() {
            Some(queued)
        } else if over_rate {
            Some(self.alternating_throttle())
        } else {
            self.random_fault(roll, pick)
        };
        let mut delay = self.latency();
        if let Some(Fault::Delay(ms)) = fault {
            delay = delay.saturating_add(Duration::from_millis(ms));
        }
        Decision { fault, delay }
    }

    fn random_fault(&mut self, roll: f64, pick: u64) -> Option<Fault> {
        let reset = self.settings.reset_rate.unwrap_or(0.0);
        let error = reset + self.settings.error_rate.unwrap_or(0.0);
        let throttle = error + self.settings.throttle_rate.unwrap_or(0.0);
        if roll < reset {
            Some(Fault::Reset)
        } else if roll < error {
            let index = usize::try_from(pick % RANDOM_SERVER_ERRORS.len() as u64).unwrap_or(0);
            RANDOM_SERVER_ERRORS
                .get(index)
                .copied()
                .map(Fault::ServerError)
        } else if roll < throttle {
            Some(self.alternating_throttle())
        } else {
            None
        }
    }

    fn alternating_throttle(&mut self) -> Fault {
        let form = if self.next_throttle_is_400 {
            ThrottleForm::BadRequest
        } else {
            ThrottleForm::TooManyRequests
        };
        self.next_throttle_is_400 = !self.next_throttle_is_400;
        Fault::Throttle(form)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn injector(json: &str) -> FaultInjector {
        FaultInjector::new(FaultSettings::from_json(json.as_bytes()).unwrap())
    }

    fn faults(inj: &mut FaultInjector, n: usize) -> Vec<Option<Fault>> {
        let now = Instant::now();
        (0..n).map(|_| inj.decide(now).fault).collect()
    }

    #[test]
    fn off_injects_nothing() {
        let mut inj = FaultInjector::default();
        assert!(faults(&mut inj, 1000).iter().all(Option::is_none));
        assert_eq!(inj.latency(), Duration::ZERO);
    }

    #[test]
    fn the_queue_is_consumed_in_order_then_normal() {
        let mut inj = injector(r#"{"next":["503","reset","delay:250","throttle-400"]}"#);
        let now = Instant::now();
        assert_eq!(
            inj.decide(now).fault,
            Some(Fault::ServerError(StatusCode::SERVICE_UNAVAILABLE))
        );
        assert_eq!(
            inj.settings().next,
            [
                Fault::Reset,
                Fault::Delay(250),
                Fault::Throttle(ThrottleForm::BadRequest)
            ]
        );
        assert_eq!(inj.decide(now).fault, Some(Fault::Reset));
        assert_eq!(
            inj.decide(now),
            Decision {
                fault: Some(Fault::Delay(250)),
                delay: Duration::from_millis(250)
            }
        );
        assert_eq!(
            inj.decide(now).fault,
            Some(Fault::Throttle(ThrottleForm::BadRequest))
        );
        assert_eq!(inj.decide(now), Decision::default_none());
        assert!(inj.settings().next.is_empty());
    }

    #[test]
    fn latency_adds_to_delays() {
        let mut inj = injector(r#"{"latency_ms":40,"next":["delay:10","500"]}"#);
        let now = Instant::now();
        assert_eq!(inj.decide(now).delay, Duration::from_millis(50));
        assert_eq!(inj.decide(now).delay, Duration::from_millis(40));
        assert_eq!(inj.decide(now).delay, Duration::from_millis(40));
    }

    #[test]
    fn rates_are_deterministic_from_the_seed() {
        let settings = r#"{"error_rate":0.3,"reset_rate":0.1,"throttle_rate":0.2,"seed":42}"#;
        let a = faults(&mut injector(settings), 2000);
        let b = faults(&mut injector(settings), 2000);
        assert_eq!(a, b);
        let c = faults(
            &mut injector(r#"{"error_rate":0.3,"reset_rate":0.1,"throttle_rate":0.2,"seed":43}"#),
            2000,
        );
        assert_ne!(a, c);

        // Replacing the settings restarts the sequence.
        let mut inj = injector(settings);
        let first = faults(&mut inj, 50);
        inj.replace(FaultSettings::from_json(settings.as_bytes()).unwrap());
        assert_eq!(faults(&mut inj, 50), first);

        // The proportions are roughly the rates.
        let share = |pred: &dyn Fn(&Fault) -> bool| {
            a.iter().filter(|f| f.as_ref().is_some_and(pred)).count() as f64 / a.len() as f64
        };
        let resets = share(&|f| *f == Fault::Reset);
        let errors = share(&|f| matches!(f, Fault::ServerError(_)));
        let throttles = share(&|f| matches!(f, Fault::Throttle(_)));
        assert!((resets - 0.1).abs() < 0.03, "{resets}");
        assert!((errors - 0.3).abs() < 0.04, "{errors}");
        assert!((throttles - 0.2).abs() < 0.04, "{throttles}");
        // Every 5xx of the list appears, and nothing else.
        for status in RANDOM_SERVER_ERRORS {
            assert!(a.contains(&Some(Fault::ServerError(status))), "{status}");
        }
        // Throttles alternate 429, 400, 429, ...
        let forms: Vec<ThrottleForm> = a
            .iter()
            .filter_map(|f| match f {
                Some(Fault::Throttle(form)) => Some(*form),
                _ => None,
            })
            .collect();
        assert!(forms.len() > 10);
        for (i, form) in forms.iter().enumerate() {
            let expected = if i % 2 == 0 {
                ThrottleForm::TooManyRequests
            } else {
                ThrottleForm::BadRequest
            };
            assert_eq!(*form, expected, "throttle #{i}");
        }
    }

    #[test]
    fn the_queue_does_not_shift_the_random_draws() {
        let rates = r#""error_rate":0.5,"seed":9"#;
        let plain = faults(&mut injector(&format!("{{{rates}}}")), 20);
        let queued = faults(
            &mut injector(&format!(r#"{{{rates},"next":["reset","reset"]}}"#)),
            20,
        );
        assert_eq!(queued[..2], [Some(Fault::Reset), Some(Fault::Reset)]);
        assert_eq!(queued[2..], plain[2..]);
    }

    #[test]
    fn certain_rates() {
        assert!(faults(&mut injector(r#"{"reset_rate":1}"#), 100)
            .iter()
            .all(|f| *f == Some(Fault::Reset)));
        assert!(faults(&mut injector(r#"{"error_rate":1.0}"#), 100)
            .iter()
            .all(|f| matches!(f, Some(Fault::ServerError(_)))));
        assert!(
            faults(&mut injector(r#"{"error_rate":0,"reset_rate":0}"#), 100)
                .iter()
                .all(Option::is_none)
        );
    }

    #[test]
    fn the_rate_limit_throttles_the_excess() {
        let mut inj = injector(r#"{"throttle_above_rps":3}"#);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let got: Vec<Option<Fault>> = [0, 10, 20, 30, 40, 50, 400, 410]
            .iter()
            .map(|ms| inj.decide(at(*ms)).fault)
            .collect();
        let throttle = |form| Some(Fault::Throttle(form));
        assert_eq!(
            got,
            [
                None,
                None,
                None,
                throttle(ThrottleForm::TooManyRequests),
                throttle(ThrottleForm::BadRequest),
                throttle(ThrottleForm::TooManyRequests),
                // 350 ms later: one token back.
                None,
                throttle(ThrottleForm::BadRequest),
            ]
        );
    }

    #[test]
    fn counters_survive_replace_but_not_reset() {
        let mut inj = injector(r#"{"unsupported_types":["Basic"]}"#);
        assert!(inj.is_unsupported("Basic") && !inj.is_unsupported("Patient"));
        inj.count(&Fault::Delay(5));
        inj.count(&Fault::Delay(7));
        inj.count(&Fault::ServerError(StatusCode::BAD_GATEWAY));
        inj.count(&Fault::UnsupportedType);
        let expected: BTreeMap<String, u64> = [("502", 1), ("delay", 2), ("unsupported-type", 1)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(inj.status().injected, expected);
        inj.replace(FaultSettings::default());
        assert_eq!(inj.status().injected, expected);
        assert!(!inj.is_unsupported("Basic"));
        inj.reset(FaultSettings::default());
        assert!(inj.status().injected.is_empty());
        assert_eq!(
            serde_json::to_value(inj.status()).unwrap(),
            serde_json::json!({
                "settings": {
                    "unsupported_types": [], "next": [], "error_rate": null, "reset_rate": null,
                    "throttle_rate": null, "throttle_above_rps": null, "latency_ms": null,
                    "seed": null, "metadata": null
                },
                "injected": {}
            })
        );
    }

    impl Decision {
        fn default_none() -> Self {
            Decision {
                fault: None,
                delay: Duration::ZERO,
            }
        }
    }
}
