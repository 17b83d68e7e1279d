//! The STS side of the app: the calls through the STS proxy and the credential sets they issued
//! (the ledger, kept by `POST /_emulator/reset`), and the STS proxy's faults.

use std::time::SystemTime;

use super::{App, SHUTTING_DOWN};
use crate::sts::faults::{StsFault, StsFaultStatus};
use crate::sts::{CallNotes, StsCall, StsStatus, UpstreamOutcome};

impl App {
    /// Records a call through the STS proxy; a successful credential-issuing answer makes its
    /// credential set accepted until its expiration (see [`StsLedger::record`]).
    pub fn record_sts_call(
        &self,
        action: Option<&str>,
        outcome: UpstreamOutcome<'_>,
        now: SystemTime,
    ) -> StsCall {
        self.record_sts_call_with_fault(action, outcome, now, None)
    }

    /// [`App::record_sts_call`] for a call an STS fault was injected into (noted in the call
    /// log's `fault`).
    pub fn record_sts_call_with_fault(
        &self,
        action: Option<&str>,
        outcome: UpstreamOutcome<'_>,
        now: SystemTime,
        fault: Option<&StsFault>,
    ) -> StsCall {
        let notes = CallNotes {
            fault,
            ..CallNotes::default()
        };
        self.record_sts_call_noted(action, outcome, now, notes)
    }

    /// [`App::record_sts_call`] with what the proxy noted about the call (the STS fault
    /// injected, the SHA-256 prefix of a web identity token).
    pub fn record_sts_call_noted(
        &self,
        action: Option<&str>,
        outcome: UpstreamOutcome<'_>,
        now: SystemTime,
        notes: CallNotes<'_>,
    ) -> StsCall {
        let mut state = self.lock();
        if state.frozen {
            // The state was saved: a credential set accepted now would be forgotten by the next
            // start, so the caller gets no set at all (the proxy answers 503).
            let refused = UpstreamOutcome::Failed {
                status: 503,
                error: SHUTTING_DOWN,
            };
            return state.sts.record_noted(action, refused, now, notes);
        }
        state.sts.record_noted(action, outcome, now, notes)
    }

    /// Takes the next STS fault for an `AssumeRole` call on the STS listener (counting it), if
    /// one is queued.
    pub fn take_sts_fault(&self) -> Option<StsFault> {
        self.lock().sts_faults.take()
    }

    /// The STS faults not consumed yet and the counters (`GET /_emulator/sts/faults`).
    pub fn sts_faults(&self) -> StsFaultStatus {
        self.lock().sts_faults.status()
    }

    /// The STS call log and the issued credential sets, `expired` as of `now`.
    pub fn sts(&self, now: SystemTime) -> StsStatus {
        self.lock().sts.status(now)
    }

    /// Makes every STS-issued credential set that has not expired yet expire at `now`; returns
    /// how many.
    pub fn expire_sts_credentials(&self, now: SystemTime) -> usize {
        self.lock().sts.expire_all(now)
    }
}
