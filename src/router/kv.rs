//! Feature `kv` in the router: reads are answered from the KV's committed
//! values, held here; writes go to the store actor and are answered when it
//! hands back their outcome, after the changes it committed are applied here
//! and told to watchers, in revision order. [`Router::store_done`] takes every
//! batch the store hands back (KV and jobs answers, events to publish).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tracing::debug;

use super::{registry::KeyHash, Router, SessionKey};
use crate::protocol::kv::{self as wire, ChangeKind, KvOp};
use crate::protocol::{ErrorCode, Op, ProtocolError, Rid};
use crate::store::{self, kv, Answer, FromStore, StoreOp};

/// Watches the bus holds at most (each is checked against every change).
pub const MAX_WATCHES: usize = 4096;

/// The KV's committed values and who watches them.
#[derive(Debug, Default)]
pub(super) struct Kv {
    entries: BTreeMap<Arc<str>, kv::Entry>,
    watches: Vec<Watch>,
    last_wid: u64,
    /// Writes each session has at the store, not answered yet: its reads wait
    /// behind them so that it reads its own writes.
    in_flight: HashMap<SessionKey, u32, KeyHash>,
}

#[derive(Debug)]
struct Watch {
    session: SessionKey,
    wid: u64,
    pattern: Box<str>,
}

impl Kv {
    pub(super) fn load(&mut self, entries: Vec<kv::Entry>) {
        self.entries = entries.into_iter().map(|e| (e.key.clone(), e)).collect();
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn watches(&self) -> usize {
        self.watches.len()
    }

    fn live(&self, key: &str, now_ms: u64) -> Option<&kv::Entry> {
        self.entries
            .get(key)
            .filter(|e| e.expires_at_ms.is_none_or(|at| at > now_ms))
    }
}

impl Router {
    pub(super) fn kv(&mut self, key: SessionKey, rid: Option<&Rid>, op: KvOp) {
        let Some(store) = &self.store else {
            let e = ProtocolError::new(
                ErrorCode::StorageUnavailable,
                "this bus runs without a store (no state directory)",
            );
            self.answer(key, rid, e.to_frame());
            return;
        };
        let write = match op {
            KvOp::Put {
                key,
                value,
                ttl_ms,
                if_revision,
            } => kv::Write::Put {
                key,
                value,
                ttl_ms,
                if_revision,
            },
            KvOp::Delete { key, if_revision } => kv::Write::Delete { key, if_revision },
            read => {
                if self.kv.in_flight.contains_key(&key) {
                    let op = StoreOp::After(Box::new(Op::Kv(Box::new(read))));
                    let request = store::Request {
                        session: key,
                        rid: rid.cloned(),
                        op,
                    };
                    match store.send(request) {
                        Ok(()) => *self.kv.in_flight.entry(key).or_default() += 1,
                        Err(refused) => {
                            let (request, _) = *refused;
                            // The store is behind: answered now, it may miss the
                            // session's last writes, which are still queued.
                            if let StoreOp::After(op) = request.op {
                                if let Op::Kv(read) = *op {
                                    self.kv_read(key, rid, *read);
                                }
                            }
                        }
                    }
                    return;
                }
                self.kv_read(key, rid, read);
                return;
            }
        };
        let request = store::Request {
            session: key,
            rid: rid.cloned(),
            op: StoreOp::Kv(write),
        };
        match store.send(request) {
            Ok(()) => *self.kv.in_flight.entry(key).or_default() += 1,
            Err(refused) => {
                let (_, why) = *refused;
                self.counters.storage_refusals += 1;
                let e = ProtocolError::new(ErrorCode::StorageUnavailable, why);
                self.answer(key, rid, e.to_frame());
            }
        }
    }

    fn kv_read(&mut self, key: SessionKey, rid: Option<&Rid>, op: KvOp) {
        let now = store::now_ms();
        let frame = match op {
            KvOp::Get { key: k } => match self.kv.live(&k, now) {
                Some(e) => wire::value(&e.key, &e.value, e.revision, e.expires_at_ms),
                None => not_found(&k),
            },
            KvOp::Keys { prefix } => {
                let mut keys = Vec::new();
                let mut more = false;
                for e in self
                    .kv
                    .entries
                    .range::<str, _>((
                        std::ops::Bound::Included(&*prefix),
                        std::ops::Bound::Unbounded,
                    ))
                    .map(|(_, e)| e)
                    .take_while(|e| e.key.starts_with(&*prefix))
                    .filter(|e| e.expires_at_ms.is_none_or(|at| at > now))
                {
                    if keys.len() == wire::MAX_LISTED {
                        more = true;
                        break;
                    }
                    keys.push(&*e.key);
                }
                wire::key_list(&keys, more)
            }
            KvOp::Watch { pattern } => {
                if self.kv.watches.len() >= MAX_WATCHES {
                    let e = ProtocolError::new(
                        ErrorCode::TooManySubscriptions,
                        format!("the bus holds at most {MAX_WATCHES} KV watches"),
                    );
                    self.answer(key, rid, e.to_frame());
                    return;
                }
                self.kv.last_wid += 1;
                let wid = self.kv.last_wid;
                if !self.answer(key, rid, wire::watch_frame("kv_watching", wid)) {
                    return;
                }
                let current: Vec<_> = self
                    .kv
                    .entries
                    .values()
                    .filter(|e| e.expires_at_ms.is_none_or(|at| at > now))
                    .filter(|e| crate::subject::matches(&pattern, &e.key))
                    .map(|e| {
                        wire::change(
                            wid,
                            ChangeKind::Put,
                            &e.key,
                            Some(&e.value),
                            e.revision,
                            e.expires_at_ms,
                        )
                    })
                    .collect();
                for frame in current {
                    if !self.deliver(key, frame) {
                        return;
                    }
                }
                if !self.deliver(key, wire::watch_frame("kv_synced", wid)) {
                    return;
                }
                self.kv.watches.push(Watch {
                    session: key,
                    wid,
                    pattern,
                });
                return;
            }
            KvOp::Unwatch { wid } => {
                let before = self.kv.watches.len();
                self.kv
                    .watches
                    .retain(|w| !(w.session == key && w.wid == wid));
                if self.kv.watches.len() == before {
                    ProtocolError::new(
                        ErrorCode::NoSuchSubscription,
                        format!("this connection has no KV watch {wid}"),
                    )
                    .to_frame()
                } else {
                    wire::watch_frame("kv_unwatched", wid)
                }
            }
            KvOp::Put { .. } | KvOp::Delete { .. } => unreachable!("writes go to the store"),
        };
        self.answer(key, rid, frame);
    }

    /// What the store committed: changes first, then the answers.
    pub(super) fn store_done(&mut self, msg: FromStore) {
        match msg {
            FromStore::Loaded { kv } => {
                debug!(keys = kv.len(), "KV loaded late, the store having opened");
                self.kv.load(kv);
            }
            FromStore::Committed {
                done,
                changes,
                events,
            } => {
                for change in changes {
                    self.kv_apply(change);
                }
                for (subject, body) in events {
                    self.publish_internal(&subject, &body);
                }
                for d in done {
                    if d.answer.is_kv() {
                        if let Some(n) = self.kv.in_flight.get_mut(&d.session) {
                            *n -= 1;
                            if *n == 0 {
                                self.kv.in_flight.remove(&d.session);
                            }
                        }
                    }
                    if !self.registry.sessions.contains_key(&d.session) {
                        continue;
                    }
                    let rid = d.rid.as_ref();
                    let frame = match d.answer {
                        Answer::After(op) => {
                            if let Op::Kv(read) = *op {
                                self.kv_read(d.session, rid, *read);
                            }
                            continue;
                        }
                        Answer::Frame(frame) => frame,
                        Answer::Unavailable(why) => {
                            self.counters.storage_refusals += 1;
                            ProtocolError::new(ErrorCode::StorageUnavailable, why).to_frame()
                        }
                        Answer::Kv(outcome) => match outcome {
                            kv::Outcome::Stored { key, revision } => wire::stored(&key, revision),
                            kv::Outcome::Deleted { key, revision } => wire::deleted(&key, revision),
                            kv::Outcome::RevisionMismatch { current } => {
                                let mut e = ProtocolError::new(
                                    ErrorCode::RevisionMismatch,
                                    if current == 0 {
                                        "`if_revision` did not hold: the key does not exist (revision 0)".to_owned()
                                    } else {
                                        format!("`if_revision` did not hold: the key is at revision {current}")
                                    },
                                );
                                e.revision = Some(current);
                                e.to_frame()
                            }
                            kv::Outcome::NotFound { key } => not_found(&key),
                            kv::Outcome::Full { detail } => {
                                ProtocolError::new(ErrorCode::KvFull, detail).to_frame()
                            }
                        },
                    };
                    self.answer(d.session, rid, frame);
                }
            }
        }
    }

    fn kv_apply(&mut self, change: kv::Change) {
        let (kind, key, revision) = match &change {
            kv::Change::Put(e) => (ChangeKind::Put, e.key.clone(), e.revision),
            kv::Change::Delete { key, revision } => (ChangeKind::Delete, key.clone(), *revision),
            kv::Change::Expire { key, revision } => (ChangeKind::Expire, key.clone(), *revision),
        };
        let watchers: Vec<(SessionKey, u64)> = self
            .kv
            .watches
            .iter()
            .filter(|w| crate::subject::matches(&w.pattern, &key))
            .map(|w| (w.session, w.wid))
            .collect();
        let entry = match change {
            kv::Change::Put(e) => {
                self.kv.entries.insert(e.key.clone(), e.clone());
                Some(e)
            }
            _ => {
                self.kv.entries.remove(&key);
                None
            }
        };
        for (session, wid) in watchers {
            let frame = wire::change(
                wid,
                kind,
                &key,
                entry.as_ref().map(|e| &e.value[..]),
                revision,
                entry.as_ref().and_then(|e| e.expires_at_ms),
            );
            self.deliver(session, frame);
        }
    }

    pub(super) fn kv_session_ended(&mut self, key: SessionKey) {
        self.kv.watches.retain(|w| w.session != key);
    }
}

fn not_found(key: &str) -> bytes::Bytes {
    ProtocolError::new(ErrorCode::NotFound, format!("no key `{key}`")).to_frame()
}
