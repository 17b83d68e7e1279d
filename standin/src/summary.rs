//! Counting what happened, and the final summary (text and JSON).

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;

use crate::delivery::Plan;
use crate::send::Attempt;

/// The outcomes the relay gives with a 2xx, in the summary's order.
pub const DONE_OUTCOMES: [&str; 5] = [
    "delivered",
    "deleted",
    "already-absent",
    "unsupported-type",
    "stale-version",
];

/// Counted when an answer has no `x-healthlake-outcome` header.
pub const NO_OUTCOME: &str = "(none)";

/// How a delivery ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Final {
    /// A 2xx.
    Done {
        status: u16,
        outcome: Option<String>,
    },
    /// Out of attempts; the last one.
    DeadLettered { last: Attempt },
    /// Not finished before the deadline (or a stop).
    Abandoned,
}

#[derive(Clone, Debug)]
struct Record {
    result: Final,
    attempts: u32,
}

#[derive(Debug, Default)]
struct Inner {
    responses_by_outcome: BTreeMap<String, u64>,
    responses_by_status: BTreeMap<u16, u64>,
    transport_errors: BTreeMap<String, u64>,
    broken_answers: u64,
    finals: Vec<Option<Record>>,
}

/// Counters shared by the delivery threads.
#[derive(Debug, Default)]
pub struct Tally {
    inner: Mutex<Inner>,
    /// Deliveries finished (2xx, dead-lettered or abandoned).
    pub finished: AtomicU64,
    /// HTTP requests sent.
    pub sent: AtomicU64,
    /// Requests that were retries.
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
}

/// A short, stable label for a connection error (no addresses or ports).
fn error_kind(error: &str) -> String {
    let lower = error.to_ascii_lowercase();
    let known = [
        ("refused", "connection refused"),
        ("reset", "connection reset"),
        ("timeout", "timeout"),
        ("timed out", "timeout"),
        ("broken pipe", "broken pipe"),
        ("closed", "connection closed"),
        ("eof", "connection closed"),
    ];
    known
        .iter()
        .find(|(needle, _)| lower.contains(needle))
        .map_or_else(
            || error.chars().take(60).collect(),
            |(_, label)| (*label).to_string(),
        )
}

impl Tally {
    pub fn new(deliveries: usize) -> Self {
        Tally {
            inner: Mutex::new(Inner {
                finals: vec![None; deliveries],
                ..Inner::default()
            }),
            ..Tally::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one HTTP request and its answer (or its failure).
    pub fn record_attempt(&self, attempt: &Attempt, is_retry: bool) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if is_retry {
            self.retried.fetch_add(1, Ordering::Relaxed);
        }
        let mut inner = self.lock();
        match attempt {
            Attempt::Answered { status, outcome }
            | Attempt::Broken {
                status, outcome, ..
            } => {
                let key = outcome.clone().unwrap_or_else(|| NO_OUTCOME.to_string());
                *inner.responses_by_outcome.entry(key).or_insert(0) += 1;
                *inner.responses_by_status.entry(*status).or_insert(0) += 1;
                if matches!(attempt, Attempt::Broken { .. }) {
                    inner.broken_answers += 1;
                }
            }
            Attempt::Failed { error } => {
                *inner.transport_errors.entry(error_kind(error)).or_insert(0) += 1;
            }
        }
    }

    /// Records how delivery `index` ended.
    pub fn record_final(&self, index: usize, result: Final, attempts: u32) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        if matches!(result, Final::DeadLettered { .. }) {
            self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(slot) = self.lock().finals.get_mut(index) {
            *slot = Some(Record { result, attempts });
        }
    }

    /// The summary of a finished run.
    pub fn summary(&self, plan: &Plan, threads: usize, elapsed: Duration) -> Summary {
        let inner = self.lock();
        let mut final_outcomes: BTreeMap<String, u64> = BTreeMap::new();
        let mut dead = 0;
        let mut abandoned = 0;
        for record in inner.finals.iter() {
            match record.as_ref().map(|r| &r.result) {
                Some(Final::Done { outcome, .. }) => {
                    let key = outcome.clone().unwrap_or_else(|| NO_OUTCOME.to_string());
                    *final_outcomes.entry(key).or_insert(0) += 1;
                }
                Some(Final::DeadLettered { .. }) => dead += 1,
                Some(Final::Abandoned) | None => abandoned += 1,
            }
        }
        let count = |o: &str| final_outcomes.get(o).copied().unwrap_or(0);
        let other_2xx = final_outcomes
            .iter()
            .filter(|(k, _)| !DONE_OUTCOMES.contains(&k.as_str()))
            .map(|(_, v)| v)
            .sum();
        let seconds = elapsed.as_secs_f64();
        let deliveries = plan.deliveries.len() as u64;
        Summary {
            deliveries,
            resources: plan.resources.len() as u64,
            threads: threads as u64,
            sent: self.sent.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            delivered: count("delivered"),
            deleted: count("deleted"),
            already_absent: count("already-absent"),
            unsupported: count("unsupported-type"),
            stale: count("stale-version"),
            other_2xx,
            dead_lettered: dead,
            abandoned,
            transport_errors: inner.transport_errors.values().sum(),
            broken_answers: inner.broken_answers,
            elapsed_seconds: (seconds * 1000.0).round() / 1000.0,
            throughput_per_second: if seconds > 0.0 {
                ((deliveries - abandoned) as f64 / seconds * 10.0).round() / 10.0
            } else {
                0.0
            },
            final_outcomes,
            responses_by_outcome: inner.responses_by_outcome.clone(),
            responses_by_status: inner
                .responses_by_status
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            transport_errors_by_kind: inner.transport_errors.clone(),
        }
    }

    /// Writes one JSON line per delivery, in plan order: how it ended.
    pub fn write_outcomes(&self, plan: &Plan, path: &Path) -> Result<(), String> {
        #[derive(Serialize)]
        struct Line<'a> {
            line: usize,
            resource: &'a str,
            method: String,
            result: &'static str,
            outcome: Option<String>,
            status: Option<u16>,
            attempts: u32,
            #[serde(skip_serializing_if = "Option::is_none")]
            scenario: Option<&'a str>,
        }
        let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
        let file = std::fs::File::create(path).map_err(err)?;
        let mut out = BufWriter::new(file);
        let inner = self.lock();
        for (d, record) in plan.deliveries.iter().zip(inner.finals.iter()) {
            let (result, outcome, status) = match record.as_ref().map(|r| &r.result) {
                Some(Final::Done { status, outcome }) => ("done", outcome.clone(), Some(*status)),
                Some(Final::DeadLettered { last }) => match last {
                    Attempt::Answered { status, outcome }
                    | Attempt::Broken {
                        status, outcome, ..
                    } => ("dead-lettered", outcome.clone(), Some(*status)),
                    Attempt::Failed { .. } => ("dead-lettered", None, None),
                },
                Some(Final::Abandoned) | None => ("abandoned", None, None),
            };
            let line = Line {
                line: d.line,
                resource: plan.resources.get(d.resource).map_or("", String::as_str),
                method: d.method.to_string(),
                result,
                outcome,
                status,
                attempts: record.as_ref().map_or(0, |r| r.attempts),
                scenario: d.scenario.as_deref(),
            };
            serde_json::to_writer(&mut out, &line).map_err(|e| err(e.into()))?;
            out.write_all(b"\n").map_err(err)?;
        }
        out.flush().map_err(err)
    }
}

/// The final summary.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    pub deliveries: u64,
    pub resources: u64,
    pub threads: u64,
    /// HTTP requests sent (retries included).
    pub sent: u64,
    /// Requests that were retries.
    pub retried: u64,
    pub delivered: u64,
    pub deleted: u64,
    pub already_absent: u64,
    pub unsupported: u64,
    pub stale: u64,
    /// 2xx answers with another (or no) outcome.
    pub other_2xx: u64,
    pub dead_lettered: u64,
    /// Not finished before the deadline.
    pub abandoned: u64,
    /// Requests that got no answer.
    pub transport_errors: u64,
    /// Answers whose body could not be read to the end.
    pub broken_answers: u64,
    pub elapsed_seconds: f64,
    /// Deliveries finished per second.
    pub throughput_per_second: f64,
    /// How deliveries ended with a 2xx, by outcome.
    pub final_outcomes: BTreeMap<String, u64>,
    /// Every answer, by outcome header (one per HTTP request answered).
    pub responses_by_outcome: BTreeMap<String, u64>,
    pub responses_by_status: BTreeMap<String, u64>,
    pub transport_errors_by_kind: BTreeMap<String, u64>,
}

/// `12345` as `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Summary {
    /// The summary for people.
    pub fn text(&self) -> String {
        let rows: [(&str, u64); 11] = [
            ("deliveries", self.deliveries),
            ("sent", self.sent),
            ("delivered", self.delivered),
            ("deleted", self.deleted),
            ("already-absent", self.already_absent),
            ("unsupported", self.unsupported),
            ("stale", self.stale),
            ("other 2xx", self.other_2xx),
            ("retried", self.retried),
            ("dead-lettered", self.dead_lettered),
            ("abandoned", self.abandoned),
        ];
        let mut out = String::from("smile-standin summary\n");
        for (name, value) in rows {
            let note = match name {
                "deliveries" => format!(
                    "  ({} resources, {} threads)",
                    thousands(self.resources),
                    self.threads
                ),
                "sent" => "  HTTP requests".to_string(),
                "retried" => "  requests that were retries".to_string(),
                _ => String::new(),
            };
            out.push_str(&format!("  {name:<15}{:>10}{note}\n", thousands(value)));
        }
        out.push_str(&format!(
            "  {:<15}{:>10} deliveries/s\n",
            "throughput",
            format!("{:.1}", self.throughput_per_second)
        ));
        out.push_str(&format!(
            "  {:<15}{:>10} s\n",
            "elapsed",
            format!("{:.1}", self.elapsed_seconds)
        ));
        let join = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {}", thousands(*v)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "  answers by outcome: {}\n",
            join(&self.responses_by_outcome)
        ));
        out.push_str(&format!(
            "  answers by status: {}\n",
            join(&self.responses_by_status)
        ));
        if self.transport_errors > 0 {
            out.push_str(&format!(
                "  no answer: {}\n",
                join(&self.transport_errors_by_kind)
            ));
        }
        out
    }

    /// Writes the summary as JSON.
    pub fn write_json(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{Delivery, Method};

    #[test]
    fn counts_and_summarises() {
        let d = |resource: usize| Delivery {
            line: resource + 1,
            resource,
            resource_type: "Patient".into(),
            id: format!("p{resource}"),
            method: Method::Delete,
            version_id: None,
            body: None,
            scenario: None,
        };
        let plan = Plan {
            deliveries: vec![d(0), d(1), d(2)],
            resources: vec![
                "Patient/p0".into(),
                "Patient/p1".into(),
                "Patient/p2".into(),
            ],
        };
        let t = Tally::new(3);
        let throttled = Attempt::Answered {
            status: 429,
            outcome: Some("throttled".into()),
        };
        t.record_attempt(&throttled, false);
        t.record_attempt(
            &Attempt::Failed {
                error: "io: Connection refused (os error 111)".into(),
            },
            true,
        );
        let deleted = Attempt::Answered {
            status: 204,
            outcome: Some("deleted".into()),
        };
        t.record_attempt(&deleted, true);
        t.record_final(
            0,
            Final::Done {
                status: 204,
                outcome: Some("deleted".into()),
            },
            3,
        );
        t.record_attempt(&throttled, false);
        t.record_final(1, Final::DeadLettered { last: throttled }, 1);
        let s = t.summary(&plan, 8, Duration::from_secs(2));
        assert_eq!(
            (s.sent, s.retried, s.deleted, s.dead_lettered, s.abandoned),
            (4, 2, 1, 1, 1)
        );
        assert_eq!(s.responses_by_outcome["throttled"], 2);
        assert_eq!(s.transport_errors_by_kind["connection refused"], 1);
        assert_eq!(s.throughput_per_second, 1.0);
        let text = s.text();
        assert!(text.contains("dead-lettered           1"), "{text}");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }
}
