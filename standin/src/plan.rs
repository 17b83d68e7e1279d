//! The plan generator: a historical backfill as Smile CDR would deliver it, built from the
//! official HL7 FHIR R4 examples, deterministic from a seed.
//!
//! Each example is a template; each round gives every template a new id (`{id}-{round}`, within
//! the 64-character FHIR id rule), so rounds make distinct resources. Each resource gets a
//! history (a [`Scenario`]): created, updated once or twice, delivered twice, deleted, deleted
//! and re-created, its delete delivered twice, deleted before the backfill reached it (HealthLake
//! never had it), or that and then re-created. Every version is stamped as Smile CDR stamps it:
//! `meta.versionId` 1, 2, 3 (a delete takes a version number too) and `meta.lastUpdated`, later
//! for later versions. Deliveries of all resources are then ordered by when they happened.
//! Resources of the unsupported types are mixed in at a chosen share.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::delivery::{is_type_name, is_valid_id, Method, PlanLine};
use crate::fhirtime;
use crate::rng::SplitMix64;

/// A resource's history in Smile CDR, as deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    /// PUT v1.
    Created,
    /// PUT v1, PUT v2.
    Updated,
    /// PUT v1, PUT v2, PUT v3.
    UpdatedTwice,
    /// PUT v1 delivered twice (the trigger and a live delivery of the same version).
    Resent,
    /// PUT v1, DELETE (v2).
    Deleted,
    /// PUT v1, PUT v2, DELETE (v3).
    UpdatedThenDeleted,
    /// PUT v1, DELETE (v2), PUT v3.
    Recreated,
    /// PUT v1, DELETE (v2) delivered twice.
    DeleteRedelivered,
    /// DELETE (v2) only: deleted before the backfill delivered it, so HealthLake never had it.
    DeletedUnseen,
    /// DELETE (v2), then PUT v3: deleted before the backfill delivered it, then re-created.
    DeletedUnseenRecreated,
}

/// One step of a history: which version, and whether it is a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Put(u32),
    Delete(u32),
}

impl Scenario {
    pub const ALL: [Scenario; 10] = [
        Scenario::Created,
        Scenario::Updated,
        Scenario::UpdatedTwice,
        Scenario::Resent,
        Scenario::Deleted,
        Scenario::UpdatedThenDeleted,
        Scenario::Recreated,
        Scenario::DeleteRedelivered,
        Scenario::DeletedUnseen,
        Scenario::DeletedUnseenRecreated,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Created => "created",
            Scenario::Updated => "updated",
            Scenario::UpdatedTwice => "updated-twice",
            Scenario::Resent => "resent",
            Scenario::Deleted => "deleted",
            Scenario::UpdatedThenDeleted => "updated-then-deleted",
            Scenario::Recreated => "recreated",
            Scenario::DeleteRedelivered => "delete-redelivered",
            Scenario::DeletedUnseen => "deleted-unseen",
            Scenario::DeletedUnseenRecreated => "deleted-unseen-recreated",
        }
    }

    /// The default share of resources with this history.
    pub fn default_weight(self) -> f64 {
        match self {
            Scenario::Created => 0.50,
            Scenario::Updated => 0.12,
            Scenario::UpdatedTwice => 0.10,
            Scenario::Resent => 0.04,
            Scenario::Deleted => 0.06,
            Scenario::UpdatedThenDeleted => 0.04,
            Scenario::Recreated => 0.04,
            Scenario::DeleteRedelivered => 0.03,
            Scenario::DeletedUnseen => 0.05,
            Scenario::DeletedUnseenRecreated => 0.02,
        }
    }

    fn steps(self) -> &'static [Step] {
        use Step::{Delete, Put};
        match self {
            Scenario::Created => &[Put(1)],
            Scenario::Updated => &[Put(1), Put(2)],
            Scenario::UpdatedTwice => &[Put(1), Put(2), Put(3)],
            Scenario::Resent => &[Put(1), Put(1)],
            Scenario::Deleted => &[Put(1), Delete(2)],
            Scenario::UpdatedThenDeleted => &[Put(1), Put(2), Delete(3)],
            Scenario::Recreated => &[Put(1), Delete(2), Put(3)],
            Scenario::DeleteRedelivered => &[Put(1), Delete(2), Delete(2)],
            Scenario::DeletedUnseen => &[Delete(2)],
            Scenario::DeletedUnseenRecreated => &[Delete(2), Put(3)],
        }
    }

    /// How many deliveries the history makes.
    pub fn len(self) -> usize {
        self.steps().len()
    }

    pub fn is_empty(self) -> bool {
        self.steps().is_empty()
    }
}

/// Parses `name=weight,name=weight`: the named scenarios get these weights, the others keep
/// their defaults. Weights are relative (they need not add up to 1).
pub fn parse_weights(spec: &str) -> Result<Vec<(Scenario, f64)>, String> {
    let mut weights: Vec<(Scenario, f64)> = Scenario::ALL
        .iter()
        .map(|s| (*s, s.default_weight()))
        .collect();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not name=weight"))?;
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|_| format!("{part:?}: the weight is not a number"))?;
        if !(value.is_finite() && value >= 0.0) {
            return Err(format!("{part:?}: the weight must be 0 or more"));
        }
        let slot = weights
            .iter_mut()
            .find(|(s, _)| s.name() == name.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                format!(
                    "unknown scenario {:?} (one of {})",
                    name.trim(),
                    names.join(", ")
                )
            })?;
        slot.1 = value;
    }
    if weights.iter().map(|(_, w)| w).sum::<f64>() <= 0.0 {
        return Err("the weights add up to 0".into());
    }
    Ok(weights)
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct Options {
    /// The directory of the HL7 examples (`build/fhir/package`).
    pub examples: PathBuf,
    /// At least this many deliveries (the last resource may add up to two more).
    pub writes: usize,
    pub seed: u64,
    /// Types HealthLake does not store.
    pub unsupported_types: Vec<String>,
    /// The share of resources of those types (0 to 1).
    pub unsupported_share: f64,
    /// Example files larger than this are skipped.
    pub max_file_bytes: u64,
    pub weights: Vec<(Scenario, f64)>,
    /// Smile CDR time of the first resource's creation, Unix milliseconds.
    pub start_unix_millis: i64,
}

/// An example used as a template.
struct Template {
    resource_type: String,
    id: String,
    raw: Vec<u8>,
    unsupported: bool,
}

/// What was generated.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub writes: usize,
    pub puts: usize,
    pub deletes: usize,
    pub resources: usize,
    pub types: usize,
    pub rounds: u32,
    pub templates: usize,
    pub unsupported_resources: usize,
    pub unsupported_writes: usize,
    /// Resources whose final state is a stored version (supported types only).
    pub expected_present: usize,
    pub expected_deleted: usize,
    pub scenarios: BTreeMap<String, usize>,
    pub skipped_large_files: Vec<String>,
    pub skipped_bad_id_files: Vec<String>,
    pub skipped_unreadable_files: Vec<String>,
    /// Rotated ids over 64 characters, not used.
    pub skipped_long_ids: usize,
    pub body_bytes: u64,
}

/// `{"resourceType","id"}` of an example, if it is a resource.
fn type_and_id(doc: &Value) -> Option<(String, String)> {
    let t = doc.get("resourceType")?.as_str()?;
    let id = doc.get("id")?.as_str()?;
    is_type_name(t).then(|| (t.to_string(), id.to_string()))
}

fn read_templates(options: &Options, stats: &mut Stats) -> Result<Vec<Template>, String> {
    let dir = &options.examples;
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list the examples in {}: {e}", dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json") && !n.starts_with('.') && n != "package.json")
        .collect();
    names.sort();
    let mut templates = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size > options.max_file_bytes {
            stats.skipped_large_files.push(name);
            continue;
        }
        let raw =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let Some((resource_type, id)) = serde_json::from_slice::<Value>(&raw)
            .ok()
            .as_ref()
            .and_then(type_and_id)
        else {
            stats.skipped_unreadable_files.push(name);
            continue;
        };
        if !is_valid_id(&id) {
            stats.skipped_bad_id_files.push(name);
            continue;
        }
        let unsupported = options.unsupported_types.contains(&resource_type);
        templates.push(Template {
            resource_type,
            id,
            raw,
            unsupported,
        });
    }
    Ok(templates)
}

/// The resource as Smile CDR delivers one version: the new id, `meta.versionId` and
/// `meta.lastUpdated` first in `meta` (which follows `id`), every other key where it was.
pub fn stamp(raw: &[u8], id: &str, version: u32, last_updated: &str) -> Result<Vec<u8>, String> {
    let doc: Value = serde_json::from_slice(raw).map_err(|e| e.to_string())?;
    let Value::Object(fields) = doc else {
        return Err("not a JSON object".into());
    };
    let mut meta = Map::new();
    meta.insert("versionId".into(), Value::String(version.to_string()));
    meta.insert(
        "lastUpdated".into(),
        Value::String(last_updated.to_string()),
    );
    if let Some(Value::Object(old)) = fields.get("meta") {
        for (k, v) in old {
            if k != "versionId" && k != "lastUpdated" {
                meta.insert(k.clone(), v.clone());
            }
        }
    }
    let mut meta = Some(Value::Object(meta));
    let mut out = Map::new();
    for (k, v) in fields {
        match k.as_str() {
            "id" => {
                out.insert(k, Value::String(id.to_string()));
                if let Some(m) = meta.take() {
                    out.insert("meta".into(), m);
                }
            }
            "meta" => {}
            _ => {
                out.insert(k, v);
            }
        }
    }
    if let Some(m) = meta.take() {
        out.insert("meta".into(), m);
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| e.to_string())
}

fn pick(weights: &[(Scenario, f64)], rng: &mut SplitMix64) -> Scenario {
    let total: f64 = weights.iter().map(|(_, w)| w).sum();
    let mut x = rng.next_f64() * total;
    for (s, w) in weights {
        if x < *w {
            return *s;
        }
        x -= w;
    }
    weights
        .iter()
        .rev()
        .find(|(_, w)| *w > 0.0)
        .map_or(Scenario::Created, |(s, _)| *s)
}

/// One delivery before ordering: when it happened in Smile CDR, and the line.
struct Event {
    at: i64,
    resource: usize,
    step: usize,
    line: PlanLine,
}

/// Generates the plan and writes it to `out`.
pub fn generate(options: &Options, out: &Path) -> Result<Stats, String> {
    let mut stats = Stats::default();
    let templates = read_templates(options, &mut stats)?;
    stats.templates = templates.len();
    let supported = templates.iter().filter(|t| !t.unsupported).count();
    let unsupported = templates.len() - supported;
    if supported == 0 {
        return Err(format!(
            "no usable example of a supported type in {}",
            options.examples.display()
        ));
    }
    // Chance of taking an unsupported template, so that they make about the share asked.
    let share = options.unsupported_share.clamp(0.0, 0.99);
    let take_unsupported = if unsupported == 0 {
        0.0
    } else {
        (share / (1.0 - share) * supported as f64 / unsupported as f64).min(1.0)
    };

    let mut rng = SplitMix64::new(options.seed);
    let mut events: Vec<Event> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut types: HashSet<&str> = HashSet::new();
    let mut writes = 0usize;
    let mut resources = 0usize;
    let mut order: Vec<usize> = (0..templates.len()).collect();
    let mut round = 0u32;
    while writes < options.writes {
        round = round.saturating_add(1);
        if round > 10_000 {
            return Err("could not reach the number of writes asked for".into());
        }
        rng.shuffle(&mut order);
        for &i in &order {
            if writes >= options.writes {
                break;
            }
            let Some(t) = templates.get(i) else { continue };
            if t.unsupported && rng.next_f64() >= take_unsupported {
                continue;
            }
            let id = format!("{}-{round}", t.id);
            if !is_valid_id(&id) {
                stats.skipped_long_ids += 1;
                continue;
            }
            let name = format!("{}/{id}", t.resource_type);
            if !seen.insert(name.clone()) {
                continue;
            }
            let scenario = pick(&options.weights, &mut rng);
            let resource = resources;
            resources += 1;
            types.insert(&t.resource_type);
            *stats.scenarios.entry(scenario.name().into()).or_insert(0) += 1;

            // Smile CDR time: a resource created every ~7 s; each later version (or delete)
            // one minute to one day after the one before it.
            let created = options.start_unix_millis
                + i64::try_from(resource).unwrap_or(i64::MAX / 8) * 7_000
                + i64::try_from(rng.range(0, 6_999)).unwrap_or(0);
            let mut version_times = vec![created];
            for _ in 0..3 {
                let last = version_times.last().copied().unwrap_or(created);
                let gap = i64::try_from(rng.range(60_000, 86_400_000)).unwrap_or(60_000);
                version_times.push(last + gap);
            }
            let mut last_event = i64::MIN;
            for (step_no, step) in scenario.steps().iter().enumerate() {
                let (version, method) = match *step {
                    Step::Put(v) => (v, Method::Put),
                    Step::Delete(v) => (v, Method::Delete),
                };
                let idx = usize::try_from(version.saturating_sub(1)).unwrap_or(0);
                let when = version_times.get(idx).copied().unwrap_or(created);
                // A re-delivery of the same version happens later.
                let at = if when > last_event {
                    when
                } else {
                    last_event + i64::try_from(rng.range(1_000, 3_600_000)).unwrap_or(1_000)
                };
                last_event = at;
                let last_updated = fhirtime::instant_from_unix_millis(when)
                    .map_err(|e| format!("meta.lastUpdated of {name} (--start too late?): {e}"))?;
                let line = match method {
                    Method::Put => {
                        let body = stamp(&t.raw, &id, version, &last_updated)?;
                        stats.body_bytes += body.len() as u64;
                        let text = String::from_utf8(body).map_err(|e| e.to_string())?;
                        stats.puts += 1;
                        PlanLine {
                            resource: name.clone(),
                            method,
                            version_id: Some(version.to_string()),
                            last_updated: Some(last_updated),
                            body: Some(text),
                            body_file: None,
                            scenario: Some(scenario.name().into()),
                        }
                    }
                    Method::Delete => {
                        stats.deletes += 1;
                        PlanLine {
                            resource: name.clone(),
                            method,
                            version_id: None,
                            last_updated: None,
                            body: None,
                            body_file: None,
                            scenario: Some(scenario.name().into()),
                        }
                    }
                };
                events.push(Event {
                    at,
                    resource,
                    step: step_no,
                    line,
                });
            }
            writes += scenario.len();
            if t.unsupported {
                stats.unsupported_resources += 1;
                stats.unsupported_writes += scenario.len();
            } else if matches!(scenario.steps().last(), Some(Step::Put(_))) {
                stats.expected_present += 1;
            } else {
                stats.expected_deleted += 1;
            }
        }
    }
    events.sort_by_key(|e| (e.at, e.resource, e.step));

    let err = |e: std::io::Error| format!("cannot write the plan {}: {e}", out.display());
    let file = std::fs::File::create(out).map_err(err)?;
    let mut w = BufWriter::new(file);
    for e in &events {
        serde_json::to_writer(&mut w, &e.line).map_err(|e| err(e.into()))?;
        w.write_all(b"\n").map_err(err)?;
    }
    w.flush().map_err(err)?;

    stats.writes = writes;
    stats.resources = resources;
    stats.types = types.len();
    stats.rounds = round;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_like_smile_cdr() {
        let raw = br#"{"resourceType":"Patient","id":"example","text":{"div":"<p>caf\u00e9 ok</p>"},"active":true}"#;
        let out = stamp(raw, "example-2", 3, "2025-03-01T10:15:30.123+00:00").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"resourceType":"Patient","id":"example-2","meta":{"versionId":"3","lastUpdated":"2025-03-01T10:15:30.123+00:00"},"text":{"div":"<p>café ok</p>"},"active":true}"#
        );
        let raw =
            br#"{"resourceType":"Observation","meta":{"profile":["p"],"versionId":"9"},"id":"o"}"#;
        let out = stamp(raw, "o-1", 1, "t").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"resourceType":"Observation","id":"o-1","meta":{"versionId":"1","lastUpdated":"t","profile":["p"]}}"#
        );
        assert!(stamp(b"[1]", "x", 1, "t").is_err());
    }

    #[test]
    fn weights() {
        let w = parse_weights("").unwrap();
        let total: f64 = w.iter().map(|(_, w)| w).sum();
        assert!((total - 1.0).abs() < 1e-9);
        let w = parse_weights("deleted-unseen-recreated=0, created=2").unwrap();
        assert!(w.contains(&(Scenario::DeletedUnseenRecreated, 0.0)));
        assert!(w.contains(&(Scenario::Created, 2.0)));
        assert!(parse_weights("nope=1")
            .unwrap_err()
            .contains("unknown scenario"));
        assert!(parse_weights("created").is_err());
        assert!(parse_weights("created=-1").is_err());
        let zero: Vec<String> = Scenario::ALL
            .iter()
            .map(|s| format!("{}=0", s.name()))
            .collect();
        assert!(parse_weights(&zero.join(",")).is_err());
        let mut rng = SplitMix64::new(1);
        let only = parse_weights(&format!("{},resent=1", zero.join(","))).unwrap();
        for _ in 0..100 {
            assert_eq!(pick(&only, &mut rng), Scenario::Resent);
        }
    }
}
