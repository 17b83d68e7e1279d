//! The state file (`--state-file`): the stored resources (exact bytes, versions, version
//! counters, deleted resources' counters included) and the temporary credentials issued through
//! the STS proxy or by the IMDS and container endpoints, so that a restarted emulator still holds
//! what it held and still accepts the credentials a relay is signing with (AWS does not forget
//! them when a server restarts either). The request log and the fault settings are not kept.
//!
//! The format is JSON lines, UTF-8, one object per line:
//!
//! ```text
//! {"kind":"header","format":"healthlake-emulator-state","version":1,"saved_at":"2026-11-27T22:00:00.000Z"}
//! {"kind":"resource","resource_type":"Patient","id":"a","version_counter":3,"version":3,"last_updated_unix_nanos":1795816800000000000,"body_base64":"eyJyZXNvdXJjZVR5cGUiOi4uLn0="}
//! {"kind":"deleted","resource_type":"Patient","id":"b","version_counter":2}
//! {"kind":"sts_credential","access_key_id":"ASIA...","secret_access_key":"...","session_token":"...","expiration":"2026-11-27T23:00:00Z","expires_at_unix_nanos":1795820400000000000,"source":"sts"}
//! ```
//!
//! Every temporary set is an `sts_credential` line, whoever issued it: `source` says who
//! (`"sts"`, `"imds"` or `"container"`; absent, as in files written before it existed, means
//! `"sts"`).
//!
//! It holds secrets and session tokens, so it is written with mode 0600 (on Unix), to a
//! temporary file next to it first and then renamed over it: a reader never sees half a file.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::credentials::IssuedBy;
use crate::fhir;
use crate::sigv4::Credential;
use crate::store::StoredResource;
use crate::timefmt;

/// The `format` of the header line.
pub const FORMAT: &str = "healthlake-emulator-state";
/// The `version` of the header line this emulator writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// A resource's version counter and, if it is live, its stored version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedResource {
    pub resource_type: String,
    pub id: String,
    /// The version counter (a deleted resource keeps counting when re-created).
    pub version_counter: u64,
    /// The stored version; `None` for a deleted resource.
    pub live: Option<StoredResource>,
}

/// A temporary credential set issued through the STS proxy or by a credential endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedCredential {
    /// With `session_token` and `expires_at` set.
    pub credential: Credential,
    /// The `Expiration`, as its issuer wrote it.
    pub expiration: String,
    /// Who issued it.
    pub source: IssuedBy,
}

/// Everything the state file keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub resources: Vec<SavedResource>,
    pub credentials: Vec<SavedCredential>,
}

impl Snapshot {
    /// How many live resources it holds.
    pub fn live_resources(&self) -> usize {
        self.resources.iter().filter(|r| r.live.is_some()).count()
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line {
    Header {
        format: String,
        version: u32,
        saved_at: String,
    },
    Resource {
        resource_type: String,
        id: String,
        version_counter: u64,
        version: u64,
        last_updated_unix_nanos: u64,
        body_base64: String,
    },
    Deleted {
        resource_type: String,
        id: String,
        version_counter: u64,
    },
    StsCredential {
        access_key_id: String,
        secret_access_key: String,
        session_token: String,
        expiration: String,
        expires_at_unix_nanos: u64,
        #[serde(default)]
        source: IssuedBy,
    },
}

fn to_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

fn from_nanos(n: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_nanos(n))
        .unwrap_or(UNIX_EPOCH)
}

fn encode_lines(snapshot: &Snapshot, now: SystemTime) -> Vec<Line> {
    let mut lines = vec![Line::Header {
        format: FORMAT.to_string(),
        version: FORMAT_VERSION,
        saved_at: timefmt::format_rfc3339_millis(now),
    }];
    for r in &snapshot.resources {
        lines.push(match &r.live {
            Some(live) => Line::Resource {
                resource_type: r.resource_type.clone(),
                id: r.id.clone(),
                version_counter: r.version_counter,
                version: live.version,
                last_updated_unix_nanos: to_nanos(live.last_updated),
                body_base64: BASE64.encode(&live.body),
            },
            None => Line::Deleted {
                resource_type: r.resource_type.clone(),
                id: r.id.clone(),
                version_counter: r.version_counter,
            },
        });
    }
    for c in &snapshot.credentials {
        let (Some(token), Some(expires_at)) =
            (&c.credential.session_token, c.credential.expires_at)
        else {
            continue;
        };
        lines.push(Line::StsCredential {
            access_key_id: c.credential.access_key_id.clone(),
            secret_access_key: c.credential.secret_access_key.clone(),
            session_token: token.clone(),
            expiration: c.expiration.clone(),
            expires_at_unix_nanos: to_nanos(expires_at),
            source: c.source,
        });
    }
    lines
}

/// Writes `snapshot` to `path` atomically: a temporary file next to it (mode 0600), flushed to
/// disk, then renamed over `path`.
pub fn save(path: &Path, snapshot: &Snapshot, now: SystemTime) -> Result<(), String> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&tmp)?;
        let mut out = BufWriter::new(file);
        for line in encode_lines(snapshot, now) {
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write the state file {}: {e}", path.display())
    })
}

/// Reads a state file; `Ok(None)` when it does not exist. Errors name the line.
pub fn load(path: &Path) -> Result<Option<Snapshot>, String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot read the state file {}: {e}",
                path.display()
            ))
        }
    };
    decode(BufReader::new(file))
        .map(Some)
        .map_err(|e| format!("state file {}: {e}", path.display()))
}

/// Parses the lines of a state file.
pub fn decode(reader: impl BufRead) -> Result<Snapshot, String> {
    let mut snapshot = Snapshot::default();
    let mut header_seen = false;
    for (n, line) in reader.lines().enumerate() {
        let n = n.saturating_add(1);
        let line = line.map_err(|e| format!("line {n}: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(&line).map_err(|e| format!("line {n}: {e}"))?;
        let bad = |what: String| format!("line {n}: {what}");
        match parsed {
            Line::Header {
                format, version, ..
            } => {
                if header_seen || n != 1 {
                    return Err(bad("a header line other than the first".into()));
                }
                if format != FORMAT || version != FORMAT_VERSION {
                    return Err(bad(format!(
                        "not a state file this emulator reads (format {format:?} version {version}, expected {FORMAT:?} version {FORMAT_VERSION})"
                    )));
                }
                header_seen = true;
            }
            _ if !header_seen => {
                return Err(bad(format!("the first line must be the {FORMAT:?} header")))
            }
            Line::Resource {
                resource_type,
                id,
                version_counter,
                version,
                last_updated_unix_nanos,
                body_base64,
            } => {
                check_key(&resource_type, &id).map_err(&bad)?;
                if version == 0 || version > version_counter {
                    return Err(bad(format!(
                        "{resource_type}/{id}: version {version} must be 1 to version_counter {version_counter}"
                    )));
                }
                let body = BASE64
                    .decode(body_base64.as_bytes())
                    .map_err(|e| bad(format!("{resource_type}/{id}: body_base64: {e}")))?;
                snapshot.resources.push(SavedResource {
                    resource_type,
                    id,
                    version_counter,
                    live: Some(StoredResource {
                        body: Bytes::from(body),
                        version,
                        last_updated: from_nanos(last_updated_unix_nanos),
                    }),
                });
            }
            Line::Deleted {
                resource_type,
                id,
                version_counter,
            } => {
                check_key(&resource_type, &id).map_err(&bad)?;
                snapshot.resources.push(SavedResource {
                    resource_type,
                    id,
                    version_counter,
                    live: None,
                });
            }
            Line::StsCredential {
                access_key_id,
                secret_access_key,
                session_token,
                expiration,
                expires_at_unix_nanos,
                source,
            } => {
                if access_key_id.is_empty() || secret_access_key.is_empty() {
                    return Err(bad("a credential set without a key id or secret".into()));
                }
                snapshot.credentials.push(SavedCredential {
                    credential: Credential::new(
                        access_key_id,
                        secret_access_key,
                        Some(session_token),
                    )
                    .expiring_at(from_nanos(expires_at_unix_nanos)),
                    expiration,
                    source,
                });
            }
        }
    }
    if !header_seen {
        return Err("empty: no header line".into());
    }
    Ok(snapshot)
}

fn check_key(resource_type: &str, id: &str) -> Result<(), String> {
    if !fhir::is_valid_resource_type(resource_type) || !fhir::is_valid_id(id) {
        return Err(format!(
            "{resource_type:?}/{id:?} is not a resource type and id"
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let t = timefmt::unix_to_system_time(1_795_816_800) + Duration::from_nanos(123_456_789);
        Snapshot {
            resources: vec![
                SavedResource {
                    resource_type: "Patient".into(),
                    id: "a".into(),
                    version_counter: 3,
                    live: Some(StoredResource {
                        body: Bytes::from_static(
                            b"{\"resourceType\":\"Patient\",\"id\":\"a\",\"x\":\"\xc3\xa9\\n\"}\n",
                        ),
                        version: 3,
                        last_updated: t,
                    }),
                },
                SavedResource {
                    resource_type: "Observation".into(),
                    id: "b.1-x".into(),
                    version_counter: 2,
                    live: None,
                },
            ],
            credentials: vec![
                SavedCredential {
                    credential: Credential::new("ASIAONE", "s3cr3t/+", Some("t0k3n==".into()))
                        .expiring_at(t + Duration::from_secs(900)),
                    expiration: "2026-11-27T22:15:00Z".into(),
                    source: IssuedBy::Sts,
                },
                SavedCredential {
                    credential: Credential::new("ASIATWO", "s3cr3t2", Some("t0k3n2".into()))
                        .expiring_at(t + Duration::from_secs(60)),
                    expiration: "2026-11-27T22:01:00Z".into(),
                    source: IssuedBy::Imds,
                },
                SavedCredential {
                    credential: Credential::new("ASIATHREE", "s3cr3t3", Some("t0k3n3".into()))
                        .expiring_at(t + Duration::from_secs(60)),
                    expiration: "2026-11-27T22:01:00Z".into(),
                    source: IssuedBy::Container,
                },
            ],
        }
    }

    #[test]
    fn round_trips_exactly() {
        let snapshot = sample();
        let mut text = Vec::new();
        for line in encode_lines(&snapshot, SystemTime::now()) {
            serde_json::to_writer(&mut text, &line).unwrap();
            text.push(b'\n');
        }
        let back = decode(text.as_slice()).unwrap();
        assert_eq!(back, snapshot);
        assert_eq!(back.live_resources(), 1);
    }

    #[test]
    fn saves_atomically_and_loads() {
        let dir = std::env::temp_dir().join(format!("hle-persist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.jsonl");
        assert_eq!(load(&path).unwrap(), None);
        save(&path, &sample(), SystemTime::now()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(sample()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Only the file itself is left: the temporary one was renamed.
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let header =
            r#"{"kind":"header","format":"healthlake-emulator-state","version":1,"saved_at":"x"}"#;
        let cases: [(String, &str); 7] = [
            (String::new(), "no header"),
            (r#"{"kind":"deleted","resource_type":"Patient","id":"a","version_counter":1}"#.to_string(), "line 1: the first line"),
            (r#"{"kind":"header","format":"other","version":1,"saved_at":"x"}"#.to_string(), "not a state file"),
            (format!("{header}\n{{\"kind\":\"deleted\",\"resource_type\":\"patient\",\"id\":\"a\",\"version_counter\":1}}"), "line 2:"),
            (format!("{header}\n{{\"kind\":\"resource\",\"resource_type\":\"Patient\",\"id\":\"a\",\"version_counter\":1,\"version\":2,\"last_updated_unix_nanos\":0,\"body_base64\":\"\"}}"), "version 2 must be"),
            (format!("{header}\n{{\"kind\":\"resource\",\"resource_type\":\"Patient\",\"id\":\"a\",\"version_counter\":1,\"version\":1,\"last_updated_unix_nanos\":0,\"body_base64\":\"***\"}}"), "body_base64"),
            (format!("{header}\nnot json"), "line 2:"),
        ];
        for (text, expected) in cases {
            let e = decode(text.as_bytes()).unwrap_err();
            assert!(e.contains(expected), "{text:?}: {e}");
        }
        let e = decode(format!("{header}\n{{\"kind\":\"sts_credential\",\"access_key_id\":\"A\",\"secret_access_key\":\"s\",\"session_token\":\"t\",\"expiration\":\"x\",\"expires_at_unix_nanos\":1,\"source\":\"ec2\"}}").as_bytes()).unwrap_err();
        assert!(
            e.contains("line 2:") && e.contains("unknown variant"),
            "{e}"
        );
    }

    #[test]
    fn a_credential_line_without_source_is_an_sts_set() {
        let text = concat!(
            r#"{"kind":"header","format":"healthlake-emulator-state","version":1,"saved_at":"x"}"#,
            "\n",
            r#"{"kind":"sts_credential","access_key_id":"ASIAOLD","secret_access_key":"s","session_token":"t","expiration":"2026-11-27T22:15:00Z","expires_at_unix_nanos":1795817700000000000}"#,
        );
        let snapshot = decode(text.as_bytes()).unwrap();
        assert_eq!(snapshot.credentials.len(), 1);
        assert_eq!(snapshot.credentials[0].source, IssuedBy::Sts);
        // Written back, every line says who issued the set, under the same kind.
        let lines = encode_lines(&sample(), SystemTime::now());
        let json: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::to_value(l).unwrap())
            .filter(|v| v["kind"] == "sts_credential")
            .collect();
        let sources: Vec<&str> = json.iter().map(|v| v["source"].as_str().unwrap()).collect();
        assert_eq!(sources, ["sts", "imds", "container"]);
        for v in &json {
            assert!(v["secret_access_key"].is_string() && v["session_token"].is_string());
        }
    }
}
