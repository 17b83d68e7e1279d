//! The in-memory FHIR resource store: exact bytes per `(type, id)`, with a version counter per
//! resource that survives deletion (a re-created resource continues its version history).

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use bytes::Bytes;

/// One stored resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResource {
    /// The exact bytes the client sent.
    pub body: Bytes,
    /// The current version (1, 2, ...).
    pub version: u64,
    /// When this version was written.
    pub last_updated: SystemTime,
}

/// The result of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutOutcome {
    /// True when no live resource existed under this key before the write.
    pub created: bool,
    /// The version just written.
    pub version: u64,
}

/// Resources keyed by `(resourceType, id)`, iterated in type-then-id order.
#[derive(Debug, Default)]
pub struct Store {
    resources: BTreeMap<(String, String), StoredResource>,
    versions: HashMap<(String, String), u64>,
}

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `body` as the next version of `type/id`.
    pub fn put(
        &mut self,
        resource_type: &str,
        id: &str,
        body: Bytes,
        now: SystemTime,
    ) -> PutOutcome {
        let key = (resource_type.to_string(), id.to_string());
        let counter = self.versions.entry(key.clone()).or_insert(0);
        *counter = counter.saturating_add(1);
        let version = *counter;
        let previous = self.resources.insert(
            key,
            StoredResource {
                body,
                version,
                last_updated: now,
            },
        );
        PutOutcome {
            created: previous.is_none(),
            version,
        }
    }

    /// Removes `type/id`; true if it existed.
    pub fn delete(&mut self, resource_type: &str, id: &str) -> bool {
        self.resources
            .remove(&(resource_type.to_string(), id.to_string()))
            .is_some()
    }

    pub fn get(&self, resource_type: &str, id: &str) -> Option<&StoredResource> {
        self.resources
            .get(&(resource_type.to_string(), id.to_string()))
    }

    /// Every live resource as `((type, id), resource)`, sorted by type then id.
    pub fn iter(&self) -> impl Iterator<Item = (&(String, String), &StoredResource)> {
        self.resources.iter()
    }

    pub fn len(&self) -> usize {
        self.resources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// Every version counter, deleted resources' included, as `((type, id), version)`.
    pub fn versions(&self) -> impl Iterator<Item = (&(String, String), u64)> {
        self.versions.iter().map(|(k, v)| (k, *v))
    }

    /// Puts back a resource's version counter and, if it is live, its stored version, exactly
    /// as saved (used when loading a state file). The counter never goes below the live
    /// resource's version.
    pub fn restore(
        &mut self,
        resource_type: &str,
        id: &str,
        counter: u64,
        live: Option<StoredResource>,
    ) {
        let key = (resource_type.to_string(), id.to_string());
        let counter = counter.max(live.as_ref().map_or(0, |r| r.version));
        self.versions.insert(key.clone(), counter);
        match live {
            Some(resource) => {
                self.resources.insert(key, resource);
            }
            None => {
                self.resources.remove(&key);
            }
        }
    }

    /// Forgets every resource and every version counter.
    pub fn clear(&mut self) {
        self.resources.clear();
        self.versions.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_continue_after_delete() {
        let mut s = Store::new();
        let now = SystemTime::now();
        assert_eq!(
            s.put("Patient", "a", Bytes::from_static(b"1"), now),
            PutOutcome {
                created: true,
                version: 1
            }
        );
        assert_eq!(
            s.put("Patient", "a", Bytes::from_static(b"2"), now),
            PutOutcome {
                created: false,
                version: 2
            }
        );
        assert!(s.delete("Patient", "a"));
        assert!(!s.delete("Patient", "a"));
        assert_eq!(
            s.put("Patient", "a", Bytes::from_static(b"3"), now),
            PutOutcome {
                created: true,
                version: 3
            }
        );
        s.put("Observation", "z", Bytes::from_static(b"4"), now);
        s.put("Observation", "b", Bytes::from_static(b"5"), now);
        let keys: Vec<_> = s.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(
            keys,
            vec![
                ("Observation".to_string(), "b".to_string()),
                ("Observation".to_string(), "z".to_string()),
                ("Patient".to_string(), "a".to_string()),
            ]
        );
        s.clear();
        assert!(s.is_empty());
        assert_eq!(s.put("Patient", "a", Bytes::new(), now).version, 1);
    }
}
