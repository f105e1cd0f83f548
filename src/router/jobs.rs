//! Feature `jobs` in the router: every job request goes to the store actor,
//! which keeps the jobs and answers; the router remembers which sessions used
//! jobs, so that when one ends the store gives up the leases it held.

use super::{Router, SessionKey};
use crate::protocol::jobs::Job;
use crate::protocol::{ErrorCode, ProtocolError, Rid};
use crate::store::{self, StoreOp};

impl Router {
    pub(super) fn job(&mut self, key: SessionKey, rid: Option<&Rid>, job: Job) {
        let Some(store) = &self.store else {
            let e = ProtocolError::new(
                ErrorCode::StorageUnavailable,
                "this bus runs without a store (no state directory)",
            );
            self.answer(key, rid, e.to_frame());
            return;
        };
        let request = store::Request {
            session: key,
            rid: rid.cloned(),
            op: StoreOp::Job(job.op),
        };
        match store.send(request) {
            Ok(()) => {
                self.job_sessions.insert(key);
            }
            Err(refused) => {
                let (_, why) = *refused;
                self.counters.storage_refusals += 1;
                let e = ProtocolError::new(ErrorCode::StorageUnavailable, why);
                self.answer(key, rid, e.to_frame());
            }
        }
    }

    pub(super) fn jobs_session_ended(&mut self, key: SessionKey) {
        if !self.job_sessions.remove(&key) {
            return;
        }
        let Some(store) = &self.store else { return };
        let request = store::Request {
            session: key,
            rid: None,
            op: StoreOp::SessionClosed,
        };
        if store.send(request).is_err() {
            tracing::warn!(
                key,
                "the store is too far behind to hear that a worker left: its leases end when they expire"
            );
        }
    }
}
