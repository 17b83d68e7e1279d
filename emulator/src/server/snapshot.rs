//! What the state file (`--state-file`) keeps of the app, taken at shutdown, and putting it back
//! at start.

use super::{App, State};
use crate::credentials::IssuedBy;
use crate::persist::{SavedCredential, SavedResource, Snapshot};

impl App {
    /// Everything a state file keeps: resources (exact bytes, versions, every version
    /// counter) and the temporary credential sets (issued through the STS proxy, then by the
    /// IMDS and container endpoints).
    pub fn snapshot(&self) -> Snapshot {
        let state = self.lock();
        Self::snapshot_of(&state)
    }

    /// Takes the snapshot and, in the same critical section, stops every later change: writes
    /// are answered `503` and STS answers are not accepted, so what was saved is what any
    /// client was told was stored. Used at shutdown.
    pub fn freeze_and_snapshot(&self) -> Snapshot {
        let mut state = self.lock();
        state.frozen = true;
        Self::snapshot_of(&state)
    }

    fn snapshot_of(state: &State) -> Snapshot {
        let resources = state
            .store
            .versions()
            .map(|((t, id), counter)| SavedResource {
                resource_type: t.clone(),
                id: id.clone(),
                version_counter: counter,
                live: state.store.get(t, id).cloned(),
            })
            .collect();
        let sts = state
            .sts
            .issued_sets()
            .map(|(c, expiration)| (c, expiration, IssuedBy::Sts));
        let credentials = sts
            .chain(state.credentials.issued_sets())
            .map(|(c, expiration, source)| SavedCredential {
                credential: c.clone(),
                expiration: expiration.to_string(),
                source,
            })
            .collect();
        Snapshot {
            resources,
            credentials,
        }
    }

    /// Puts back what a state file kept (at start, before serving). Returns how many live
    /// resources and credential sets were restored.
    pub fn restore(&self, snapshot: Snapshot) -> (usize, usize) {
        let mut state = self.lock();
        let mut live = 0;
        for r in snapshot.resources {
            live += usize::from(r.live.is_some());
            state
                .store
                .restore(&r.resource_type, &r.id, r.version_counter, r.live);
        }
        let mut credentials = 0;
        for c in snapshot.credentials {
            let restored = match c.source {
                IssuedBy::Sts => state.sts.restore_issued(c.credential, c.expiration),
                IssuedBy::Imds | IssuedBy::Container => {
                    state
                        .credentials
                        .restore_issued(c.credential, c.expiration, c.source)
                }
            };
            credentials += usize::from(restored);
        }
        (live, credentials)
    }
}
