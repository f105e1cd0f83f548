//! The router's side of the store actor: sending it a session's request (a
//! refusal is answered `storage_unavailable` and counted) and taking back, in
//! commit order, what it committed: KV changes (applied and told to watchers
//! before any answer), events to publish, then the answers. Sessions that
//! hold state in the store (leases, consumers) are told to it when they end.

use bytes::Bytes;

use super::{Router, SessionKey};
use crate::protocol::{ErrorCode, ProtocolError, Rid};
use crate::store::{self, Answer, FromStore, StoreOp};

/// The answer to a persistent request on a bus started without a store.
pub(super) fn no_store() -> Bytes {
    ProtocolError::new(
        ErrorCode::StorageUnavailable,
        "this bus runs without a store (no state directory; see --state-dir and --no-store)",
    )
    .to_frame()
}

impl Router {
    /// Sends `op` to the store for `key`. False when it cannot take it (no
    /// store, or too far behind): the client has been answered why.
    pub(super) fn send_to_store(
        &mut self,
        key: SessionKey,
        rid: Option<&Rid>,
        op: StoreOp,
    ) -> bool {
        let Some(store) = &self.store else {
            self.answer(key, rid, no_store());
            return false;
        };
        let request = store::Request {
            session: key,
            rid: rid.cloned(),
            op,
        };
        match store.send(request) {
            Ok(()) => true,
            Err(refused) => {
                let (_, why) = *refused;
                self.counters.storage_refusals += 1;
                let e = ProtocolError::new(ErrorCode::StorageUnavailable, why);
                self.answer(key, rid, e.to_frame());
                false
            }
        }
    }

    /// What the store committed: changes first, then the answers.
    pub(super) fn store_done(&mut self, msg: FromStore) {
        let (done, changes, events) = match msg {
            FromStore::Loaded { kv } => return self.kv_load(kv),
            FromStore::Committed {
                done,
                changes,
                events,
            } => (done, changes, events),
        };
        for change in changes {
            self.kv_apply(change);
        }
        for (subject, body) in events {
            self.publish_internal(&subject, &body);
        }
        for d in done {
            if d.answer.is_kv() {
                self.kv_answered(d.session);
            }
            if !self.registry.sessions.contains_key(&d.session) {
                continue;
            }
            let rid = d.rid.as_ref();
            let frame = match d.answer {
                Answer::After(op) => {
                    self.kv_read_after(d.session, rid, *op);
                    continue;
                }
                Answer::Replay(chunk) => {
                    self.replay_chunk(d.session, rid, chunk);
                    continue;
                }
                Answer::Deliveries(deliveries) => {
                    self.consumer_deliveries(d.session, deliveries);
                    continue;
                }
                Answer::Frame(frame) => frame,
                Answer::Kv(outcome) => super::kv::outcome_frame(outcome),
                Answer::Unavailable(why) => {
                    self.counters.storage_refusals += 1;
                    ProtocolError::new(ErrorCode::StorageUnavailable, why).to_frame()
                }
            };
            self.answer(d.session, rid, frame);
        }
    }

    pub(super) fn store_session_ended(&mut self, key: SessionKey) {
        if self.store_sessions.remove(&key) {
            self.closes_pending.push(key);
            self.tell_closes();
        }
    }

    /// Tells the store which sessions with state in it ended, so it gives up
    /// their leases, waiting claims and consumers. When its queue is full they are told again at the
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
