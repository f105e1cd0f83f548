//! Feature `jobs` in the router: every job request goes to the store actor,
//! which keeps the jobs and answers; the router remembers which sessions used
//! jobs, so that when one ends the store gives up the leases it held.

use super::{Router, SessionKey};
use crate::protocol::jobs::Job;
use crate::protocol::Rid;
use crate::store::{self, StoreOp};

impl Router {
    pub(super) fn job(&mut self, key: SessionKey, rid: Option<&Rid>, job: Job) {
        if self.send_to_store(key, rid, StoreOp::Job(job.op)) {
            self.job_sessions.insert(key);
        }
    }

    pub(super) fn jobs_session_ended(&mut self, key: SessionKey) {
        if self.job_sessions.remove(&key) {
            self.closes_pending.push(key);
            self.tell_closes();
        }
    }

    /// Tells the store which job sessions ended, so it gives up their leases
    /// and waiting claims. When its queue is full they are told again at the
    /// next tick: a lost close would leave jobs leased to nobody.
    pub(super) fn tell_closes(&mut self) {
        let Some(store) = &self.store else {
            self.closes_pending.clear();
            return;
        };
        let pending = std::mem::take(&mut self.closes_pending);
        for key in pending {
            let request = store::Request {
                session: key,
                rid: None,
                op: StoreOp::SessionClosed,
            };
            if store.send(request).is_err() {
                self.closes_pending.push(key);
            }
        }
    }
}
