//! Feature `jobs` in the router: every job request goes to the store actor,
//! which keeps the jobs and answers; the router remembers which sessions used
//! jobs, so that when one ends the store gives up the leases it held
//! ([`Router::store_session_ended`]).

use super::{Router, SessionKey};
use crate::protocol::jobs::Job;
use crate::protocol::Rid;
use crate::store::StoreOp;

impl Router {
    pub(super) fn job(&mut self, key: SessionKey, rid: Option<&Rid>, job: Job) {
        if self.send_to_store(key, rid, StoreOp::Job(job.op)) {
            self.store_sessions.insert(key);
        }
    }
}
