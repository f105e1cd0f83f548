//! Feature `kv` in the router: reads are answered from the KV's committed
//! values, held here; writes go to the store actor and are answered when it
//! hands back their outcome, after the changes it committed are applied here
//! and told to watchers, in revision order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tracing::debug;

use super::{registry::KeyHash, Router, SessionKey};
use crate::protocol::kv::{self as wire, ChangeKind, KvOp};
use crate::protocol::{ErrorCode, Op, ProtocolError, Rid};
use crate::store::{self, kv, StoreOp};

/// Watches the bus holds at most (each is checked against every change).
pub const MAX_WATCHES: usize = 4096;

/// Watches one connection may hold.
pub const MAX_WATCHES_PER_SESSION: usize = 256;

/// Most current values a `kv_watch` is sent before its live changes, in keys
/// and in bytes, and most keys the router looks at to find them: a watch past
/// these is refused (`snapshot_too_large`), so no one watch holds the router
/// or fills memory.
pub const MAX_SNAPSHOT_KEYS: usize = 10_000;
pub const MAX_SNAPSHOT_BYTES: usize = 16 * 1024 * 1024;
pub const MAX_SNAPSHOT_SCAN: usize = 100_000;

/// The KV's committed values and who watches them.
#[derive(Debug, Default)]
pub(super) struct Kv {
    /// Whether the store could be read: until then reads are refused, not
    /// answered from an empty map.
    loaded: bool,
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
        self.loaded = true;
        self.entries = entries.into_iter().map(|e| (e.key.clone(), e)).collect();
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn watches(&self) -> usize {
        self.watches.len()
    }

    /// The current values matching `pattern`, within the snapshot bounds.
    fn snapshot(&self, pattern: &str, now_ms: u64) -> Result<Vec<kv::Entry>, String> {
        // Keys matching start with the pattern's tokens before its first wildcard.
        let literal: Vec<&str> = pattern
            .split('.')
            .take_while(|t| *t != "*" && *t != ">")
            .collect();
        let prefix = literal.join(".");
        let (mut found, mut bytes) = (Vec::new(), 0usize);
        let too_large = || {
            format!("the watch matches more than {MAX_SNAPSHOT_KEYS} keys or {} MiB of current values (or the router would look through more than {MAX_SNAPSHOT_SCAN} keys): watch a narrower pattern, or send \"snapshot\":false for the changes only", MAX_SNAPSHOT_BYTES >> 20)
        };
        let range = self
            .entries
            .range::<str, _>((
                std::ops::Bound::Included(prefix.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .map(|(_, e)| e)
            .take_while(|e| e.key.starts_with(prefix.as_str()));
        for (scanned, e) in range.enumerate() {
            if scanned == MAX_SNAPSHOT_SCAN {
                return Err(too_large());
            }
            if e.expires_at_ms.is_some_and(|at| at <= now_ms)
                || !crate::subject::matches(pattern, &e.key)
            {
                continue;
            }
            bytes += e.key.len() + e.value.len();
            if found.len() == MAX_SNAPSHOT_KEYS || bytes > MAX_SNAPSHOT_BYTES {
                return Err(too_large());
            }
            found.push(e.clone());
        }
        Ok(found)
    }

    fn live(&self, key: &str, now_ms: u64) -> Option<&kv::Entry> {
        self.entries
            .get(key)
            .filter(|e| e.expires_at_ms.is_none_or(|at| at > now_ms))
    }
}

impl Router {
    pub(super) fn kv(&mut self, key: SessionKey, rid: Option<&Rid>, op: KvOp) {
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
                if let Some(store) = self
                    .store
                    .as_ref()
                    .filter(|_| self.kv.in_flight.contains_key(&key))
                {
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
        if self.send_to_store(key, rid, StoreOp::Kv(write)) {
            *self.kv.in_flight.entry(key).or_default() += 1;
        }
    }

    fn kv_read(&mut self, key: SessionKey, rid: Option<&Rid>, op: KvOp) {
        if self.store.is_none() {
            self.answer(key, rid, super::store::no_store());
            return;
        }
        if !self.kv.loaded && !matches!(op, KvOp::Unwatch { .. }) {
            let why = self
                .store
                .as_ref()
                .and_then(|s| s.health.report()["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "the store is not open".to_owned());
            let e = ProtocolError::new(
                ErrorCode::StorageUnavailable,
                format!("the KV cannot be read: {why}"),
            );
            self.answer(key, rid, e.to_frame());
            return;
        }
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
            KvOp::Watch { pattern, snapshot } => {
                let mine = self.kv.watches.iter().filter(|w| w.session == key).count();
                if self.kv.watches.len() >= MAX_WATCHES || mine >= MAX_WATCHES_PER_SESSION {
                    let e = ProtocolError::new(
                        ErrorCode::TooManySubscriptions,
                        format!("a connection holds at most {MAX_WATCHES_PER_SESSION} KV watches, the bus {MAX_WATCHES}"),
                    );
                    self.answer(key, rid, e.to_frame());
                    return;
                }
                let current = if snapshot {
                    match self.kv.snapshot(&pattern, now) {
                        Ok(current) => current,
                        Err(detail) => {
                            let e = ProtocolError::new(ErrorCode::SnapshotTooLarge, detail);
                            self.answer(key, rid, e.to_frame());
                            return;
                        }
                    }
                } else {
                    Vec::new()
                };
                self.kv.last_wid += 1;
                let wid = self.kv.last_wid;
                if !self.answer(key, rid, wire::watch_frame("kv_watching", wid)) {
                    return;
                }
                for e in current {
                    let frame = wire::change(
                        wid,
                        ChangeKind::Put,
                        &e.key,
                        Some(&e.value),
                        e.revision,
                        e.expires_at_ms,
                    );
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

    /// A KV request the store answered: one fewer in flight for `session`.
    pub(super) fn kv_answered(&mut self, session: SessionKey) {
        if let Some(n) = self.kv.in_flight.get_mut(&session) {
            *n -= 1;
            if *n == 0 {
                self.kv.in_flight.remove(&session);
            }
        }
    }

    /// A read queued behind the session's writes, now that they committed.
    pub(super) fn kv_read_after(&mut self, session: SessionKey, rid: Option<&Rid>, op: Op) {
        if let Op::Kv(read) = op {
            self.kv_read(session, rid, *read);
        }
    }

    pub(super) fn kv_load(&mut self, entries: Vec<kv::Entry>) {
        debug!(
            keys = entries.len(),
            "KV loaded late, the store having opened"
        );
        self.kv.load(entries);
    }

    pub(super) fn kv_apply(&mut self, change: kv::Change) {
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
            // A watcher whose outbox is full loses the watch, and is told: it
            // watches again for a fresh view, rather than the bus holding the
            // changes for it.
            let behind = self
                .registry
                .sessions
                .get(&session)
                .is_some_and(|s| s.outbox.parked() > 0);
            if behind {
                self.kv
                    .watches
                    .retain(|w| !(w.session == session && w.wid == wid));
                self.counters.watches_ended += 1;
                let frame = crate::frame::encode_json(&serde_json::json!({
                    "type": "kv_unwatched",
                    "wid": wid,
                    "reason": "the watcher fell behind: changes were not sent; watch again for the current values",
                }));
                self.deliver(session, frame);
                continue;
            }
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

/// The answer to a KV write, from what the store made of it.
pub(super) fn outcome_frame(outcome: kv::Outcome) -> bytes::Bytes {
    match outcome {
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
        kv::Outcome::Full { detail } => ProtocolError::new(ErrorCode::KvFull, detail).to_frame(),
    }
}

fn not_found(key: &str) -> bytes::Bytes {
    ProtocolError::new(ErrorCode::NotFound, format!("no key `{key}`")).to_frame()
}
