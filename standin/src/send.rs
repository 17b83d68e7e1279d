//! The sender: REST-hook deliveries as HAPI FHIR's client sends them, from several delivery
//! threads, with Smile CDR's broker semantics.
//!
//! - A 2xx answer means done; anything else (and a connection error) is tried again after a
//!   delay with a little jitter, up to a number of attempts, then the delivery is
//!   dead-lettered.
//! - All deliveries of one resource go through one thread, in plan order: a later one is sent
//!   only once the one before it got its 2xx or was dead-lettered. A delivery waiting for its
//!   retry holds its thread (HAPI FHIR's retrying message handler retries in the consuming
//!   thread), so the load offered never exceeds what the threads can send.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::delivery::{Delivery, Method, Plan};
use crate::rng::SplitMix64;
use crate::summary::{Final, Tally};

/// The headers HAPI FHIR's REST-hook client sends.
pub const CONTENT_TYPE: &str = "application/fhir+json; charset=UTF-8";
pub const ACCEPT: &str = "application/fhir+json;q=1.0, application/json+fhir;q=0.9";
pub const DEFAULT_USER_AGENT: &str = "HAPI-FHIR/7.4.0 (FHIR Client; FHIR 4.0.1/R4; apache)";
/// The relay's verdict header.
pub const OUTCOME_HEADER: &str = "x-healthlake-outcome";

/// How to send.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The Subscription's `channel.endpoint`, e.g. `http://127.0.0.1:10000`.
    pub endpoint: String,
    pub threads: usize,
    pub retry_delay: Duration,
    pub max_attempts: u32,
    /// Per request.
    pub timeout: Duration,
    /// `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    pub user_agent: String,
    /// After this, what is left is abandoned (the run is bounded).
    pub deadline: Duration,
    /// Seed of the retry jitter.
    pub seed: u64,
}

/// The result of one HTTP attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// An answer: status and the relay's outcome header.
    Answered {
        status: u16,
        outcome: Option<String>,
    },
    /// An answer whose body could not be read to the end: not a completed delivery.
    Broken {
        status: u16,
        outcome: Option<String>,
        error: String,
    },
    /// No answer (connection refused or reset, timeout).
    Failed { error: String },
}

/// FNV-1a: which thread a resource goes through.
pub fn thread_of(resource: &str, threads: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in resource.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % threads.max(1) as u64) as usize
}

fn agent(settings: &Settings) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(settings.timeout))
        .max_idle_connections_per_host(2)
        .build();
    ureq::Agent::new_with_config(config)
}

fn url(settings: &Settings, d: &Delivery) -> String {
    format!(
        "{}/{}/{}",
        settings.endpoint.trim_end_matches('/'),
        d.resource_type,
        d.id
    )
}

fn common<B>(settings: &Settings, rb: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
    let rb = rb
        .header("Accept", ACCEPT)
        .header("User-Agent", settings.user_agent.as_str());
    match &settings.bearer_token {
        Some(token) => rb.header("Authorization", format!("Bearer {token}")),
        None => rb,
    }
}

/// Sends one delivery once.
pub fn send_once(agent: &ureq::Agent, settings: &Settings, d: &Delivery) -> Attempt {
    let target = url(settings, d);
    let result = match (d.method, &d.body) {
        (Method::Put, Some(body)) => {
            let mut rb = common(settings, agent.put(&target)).header("Content-Type", CONTENT_TYPE);
            if let Some(v) = &d.version_id {
                rb = rb.header("If-Match", format!("W/\"{v}\""));
            }
            rb.send(&body[..])
        }
        (Method::Put, None) => {
            return Attempt::Failed {
                error: "a PUT without a body".into(),
            }
        }
        (Method::Delete, _) => common(settings, agent.delete(&target)).call(),
    };
    match result {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let outcome = resp
                .headers()
                .get(OUTCOME_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            // Read the answer to its end, so the connection can carry the next request.
            match resp.body_mut().with_config().limit(256 << 20).read_to_vec() {
                Ok(_) => Attempt::Answered { status, outcome },
                Err(e) => Attempt::Broken {
                    status,
                    outcome,
                    error: e.to_string(),
                },
            }
        }
        Err(e) => Attempt::Failed {
            error: e.to_string(),
        },
    }
}

/// One delivery thread: its deliveries in plan order, one at a time. A delivery that did not
/// get a 2xx is tried again after the delay, in this thread (as HAPI FHIR's retrying message
/// handler does), so a resource's later delivery waits for the earlier one.
struct Worker<'a> {
    plan: &'a Plan,
    settings: &'a Settings,
    tally: &'a Tally,
    agent: ureq::Agent,
    rng: SplitMix64,
    queue: VecDeque<usize>,
}

impl Worker<'_> {
    fn jittered_delay(&mut self) -> Duration {
        // ±20 %.
        let factor = 0.8 + 0.4 * self.rng.next_f64();
        self.settings.retry_delay.mul_f64(factor)
    }

    /// Delivers `d` (plan index `i`): attempts until a 2xx, the last attempt, or the deadline.
    fn deliver(&mut self, i: usize, d: &Delivery, deadline: Instant, stop: &AtomicBool) {
        let mut attempts = 0u32;
        loop {
            let attempt = send_once(&self.agent, self.settings, d);
            attempts = attempts.saturating_add(1);
            self.tally.record_attempt(&attempt, attempts > 1);
            match attempt {
                Attempt::Answered { status, outcome } if (200..300).contains(&status) => {
                    self.tally
                        .record_final(i, Final::Done { status, outcome }, attempts);
                    return;
                }
                last if attempts >= self.settings.max_attempts => {
                    self.tally
                        .record_final(i, Final::DeadLettered { last }, attempts);
                    return;
                }
                _ => {}
            }
            let wake = Instant::now() + self.jittered_delay();
            if wake >= deadline || stop.load(Ordering::Relaxed) {
                self.tally.record_final(i, Final::Abandoned, attempts);
                return;
            }
            std::thread::sleep(wake.saturating_duration_since(Instant::now()));
        }
    }

    fn run(&mut self, deadline: Instant, stop: &AtomicBool) {
        let plan = self.plan;
        while let Some(i) = self.queue.pop_front() {
            let Some(d) = plan.deliveries.get(i) else {
                continue;
            };
            if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
                self.tally.record_final(i, Final::Abandoned, 0);
                for rest in self.queue.drain(..) {
                    self.tally.record_final(rest, Final::Abandoned, 0);
                }
                return;
            }
            self.deliver(i, d, deadline, stop);
        }
    }
}

/// Sends every delivery of `plan`; returns when all are done, dead-lettered or abandoned.
pub fn run(plan: &Plan, settings: &Settings, tally: &Tally, stop: &AtomicBool) {
    let threads = settings.threads.max(1);
    let mut queues: Vec<VecDeque<usize>> = vec![VecDeque::new(); threads];
    for (i, d) in plan.deliveries.iter().enumerate() {
        let name = plan.resources.get(d.resource).map_or("", String::as_str);
        if let Some(q) = queues.get_mut(thread_of(name, threads)) {
            q.push_back(i);
        }
    }
    let deadline = Instant::now() + settings.deadline;
    std::thread::scope(|scope| {
        for (n, queue) in queues.into_iter().enumerate() {
            let seed = settings.seed ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            scope.spawn(move || {
                let mut worker = Worker {
                    plan,
                    settings,
                    tally,
                    agent: agent(settings),
                    rng: SplitMix64::new(seed),
                    queue,
                };
                worker.run(deadline, stop);
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_stable_and_spread() {
        assert_eq!(thread_of("Patient/a", 8), thread_of("Patient/a", 8));
        let mut counts = [0usize; 8];
        for i in 0..8000 {
            counts[thread_of(&format!("Observation/o-{i}"), 8)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800 && c < 1200), "{counts:?}");
        assert_eq!(thread_of("x", 0), 0);
    }
}
