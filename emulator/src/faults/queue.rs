//! A queue of faults consumed one per request, with its counters: the plumbing of the STS
//! proxy's faults (`/_emulator/sts/faults`, [`crate::sts::faults`]) and of the credential
//! endpoints' (`/_emulator/credentials/faults`, [`crate::credentials::faults`]).
//!
//! Generic over the fault kind `F`, which is written as text in `next` (its serde form) and in
//! the counters (its [`Display`](fmt::Display) form, expected to be the same text).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What `PUT` on a fault queue's endpoint takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultQueueSettings<F> {
    /// Faults for the next requests that consume one, one each, in order.
    // Not a bare `default`, which would ask for `F: Default`.
    #[serde(default = "Vec::new")]
    pub next: Vec<F>,
}

impl<F> Default for FaultQueueSettings<F> {
    fn default() -> Self {
        FaultQueueSettings { next: Vec::new() }
    }
}

impl<F: DeserializeOwned> FaultQueueSettings<F> {
    /// Parses a JSON body; errors are one line, meant for the caller.
    pub fn from_json(body: &[u8]) -> Result<Self, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(
                "the body is empty; send a JSON object, e.g. {} for no faults or {\"next\":[\"503\"]}"
                    .to_string(),
            );
        }
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if !value.is_object() {
            return Err("expected a JSON object, e.g. {\"next\":[\"503\"]}".to_string());
        }
        serde_json::from_value(value).map_err(|e| e.to_string())
    }
}

/// The answer of `GET` on a fault queue's endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FaultQueueStatus<F> {
    /// `next` holds only the entries not consumed yet.
    pub settings: FaultQueueSettings<F>,
    /// How many faults of each kind were injected (kinds never injected are left out).
    pub injected: BTreeMap<String, u64>,
}

/// The fault queue and its counters.
#[derive(Clone, Debug)]
pub struct FaultQueue<F> {
    queue: VecDeque<F>,
    injected: BTreeMap<String, u64>,
}

impl<F> Default for FaultQueue<F> {
    fn default() -> Self {
        FaultQueue {
            queue: VecDeque::new(),
            injected: BTreeMap::new(),
        }
    }
}

impl<F: Clone + fmt::Display> FaultQueue<F> {
    /// Puts new settings in force; the counters are kept.
    pub fn replace(&mut self, settings: FaultQueueSettings<F>) {
        self.queue = settings.next.into();
    }

    /// No faults, counters cleared.
    pub fn reset(&mut self) {
        self.queue.clear();
        self.injected.clear();
    }

    /// Takes the next entry for a request that consumes one, counting it.
    pub fn take(&mut self) -> Option<F> {
        let fault = self.queue.pop_front()?;
        let n = self.injected.entry(fault.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        Some(fault)
    }

    pub fn status(&self) -> FaultQueueStatus<F> {
        FaultQueueStatus {
            settings: FaultQueueSettings {
                next: self.queue.iter().cloned().collect(),
            },
            injected: self.injected.clone(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A fault kind for the tests, written like the real ones.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    enum TestFault {
        Garbled,
        Huge,
    }

    impl fmt::Display for TestFault {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(match self {
                TestFault::Garbled => "garbled",
                TestFault::Huge => "huge",
            })
        }
    }

    type Settings = FaultQueueSettings<TestFault>;

    #[test]
    fn settings_reject_what_is_not_an_object_with_next() {
        let s = Settings::from_json(br#" {"next":["huge","garbled"]} "#).unwrap();
        assert_eq!(s.next, [TestFault::Huge, TestFault::Garbled]);
        assert_eq!(Settings::from_json(b"{}").unwrap(), Settings::default());
        for (body, error) in [
            (
                "",
                "the body is empty; send a JSON object, e.g. {} for no faults or {\"next\":[\"503\"]}",
            ),
            (
                " \n",
                "the body is empty; send a JSON object, e.g. {} for no faults or {\"next\":[\"503\"]}",
            ),
            ("[]", "expected a JSON object, e.g. {\"next\":[\"503\"]}"),
            ("null", "expected a JSON object, e.g. {\"next\":[\"503\"]}"),
            ("{", "EOF while parsing an object at line 1 column 1"),
            (r#"{"nxt":[]}"#, "unknown field `nxt`, expected `next`"),
            (
                r#"{"next":"huge"}"#,
                "invalid type: string \"huge\", expected a sequence",
            ),
            (r#"{"next":null}"#, "invalid type: null, expected a sequence"),
        ] {
            assert_eq!(Settings::from_json(body.as_bytes()).unwrap_err(), error);
        }
        let e = Settings::from_json(br#"{"next":["teapot"]}"#).unwrap_err();
        assert!(e.contains("unknown variant `teapot`"), "{e}");
    }

    #[test]
    fn the_queue_is_consumed_and_counted() {
        let mut queue = FaultQueue::default();
        assert_eq!(
            serde_json::to_string(&queue.status()).unwrap(),
            r#"{"settings":{"next":[]},"injected":{}}"#
        );
        queue.replace(Settings::from_json(br#"{"next":["huge","huge","garbled"]}"#).unwrap());
        assert_eq!(queue.take(), Some(TestFault::Huge));
        assert_eq!(
            serde_json::to_string(&queue.status()).unwrap(),
            r#"{"settings":{"next":["huge","garbled"]},"injected":{"huge":1}}"#
        );
        queue.replace(Settings::from_json(br#"{"next":["garbled","huge"]}"#).unwrap());
        assert_eq!(queue.take(), Some(TestFault::Garbled));
        assert_eq!(queue.take(), Some(TestFault::Huge));
        assert_eq!(queue.take(), None);
        assert_eq!(
            serde_json::to_string(&queue.status()).unwrap(),
            r#"{"settings":{"next":[]},"injected":{"garbled":1,"huge":2}}"#
        );
        queue.replace(Settings::from_json(br#"{"next":["garbled"]}"#).unwrap());
        queue.reset();
        assert_eq!(queue.status().settings, Settings::default());
        assert!(queue.status().injected.is_empty());
    }
}
