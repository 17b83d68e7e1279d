//! The root context's part of the flow: the writes held until credentials exist are signed and
//! resumed once there are some, or answered `503 no-credentials` once they have waited long
//! enough (`first_fetch_wait_ms`).

use super::request::{no_credentials_body, send_answer, sign_and_rewrite, NO_CREDENTIALS_HEADERS};
use super::Host;
use crate::credentials::provider::ForSigning;
use crate::outcome::Outcome;
use crate::worker::Worker;

/// Signs and resumes the held requests that can now be signed, and answers those that have
/// waited long enough. Called at each tick and when credentials arrive.
pub fn resolve(host: &impl Host, worker: &Worker) {
    let Some(now) = host.now() else { return };
    let decided = match worker.credentials.try_borrow_mut() {
        Ok(mut provider) if provider.waiting() > 0 => provider.decided(now),
        _ => return,
    };
    for (w, decision) in decided {
        if !host.set_effective_context(w.context_id) {
            continue; // The request is gone.
        }
        let resource_type = w.job.target.resource_type.clone();
        let why = match decision {
            ForSigning::Ready(creds, generation) => {
                match sign_and_rewrite(host, worker, w.job, &creds, generation, now) {
                    Ok(forwarded) => {
                        if let Ok(mut resumed) = worker.resumed.try_borrow_mut() {
                            resumed.insert(w.context_id, Box::new(forwarded));
                        }
                        if !host.resume_request() {
                            host.reset_request();
                        }
                        continue;
                    }
                    Err(what) => what.to_owned(),
                }
            }
            ForSigning::Fail(why) => why,
            ForSigning::Wait => "the credentials are still coming".to_owned(),
        };
        send_answer(
            host,
            Some(&resource_type),
            503,
            Outcome::NoCredentials,
            &no_credentials_body(&why),
            NO_CREDENTIALS_HEADERS,
        );
    }
}
