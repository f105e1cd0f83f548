//! Feature `streams` in the router: publishes on a declared stream's subjects
//! go to the store to be kept; `replay` and durable consumers' requests go to
//! the store, which reads one chunk at a time, and the router asks for the
//! next chunk only once the client has room for it, so a long replay or a
//! consumer far behind never fills memory.

use super::{Router, SessionKey};
use crate::protocol::streams::StreamOp;
use crate::protocol::{Publish, Rid};
use crate::store::{self, consumers::Deliveries, streams::Chunk, StoreOp};

impl Router {
    pub(super) fn stream_request(&mut self, key: SessionKey, rid: Option<&Rid>, op: StreamOp) {
        self.last_replay += 1;
        let replay = self.last_replay;
        let consumes = matches!(op, StreamOp::Consume(_));
        if self.send_to_store(key, rid, StoreOp::Stream { op, replay }) && consumes {
            // Its consumers are released when it ends.
            self.store_sessions.insert(key);
        }
    }

    /// Whether a publish on `subject` is kept in a stream.
    pub(super) fn kept_in_stream(&self, subject: &str) -> bool {
        self.store
            .as_ref()
            .is_some_and(|s| s.streams.iter().any(|c| c.takes(subject)))
    }

    /// Whether the store has more stream appends to commit than it may
    /// (`--append-backlog`; with `resume`, half of it, so a held publisher goes
    /// on only once the store has caught up some way).
    pub(super) fn store_behind(&self, resume: bool) -> bool {
        let Some(store) = &self.store else {
            return false;
        };
        let limit = if resume {
            store.append_backlog / 2
        } else {
            store.append_backlog
        };
        store.health.append_backlog() + self.appends_weight > limit
    }

    /// Keeps `p` in every stream whose subjects it matches.
    pub(super) fn stream_append(&mut self, from: SessionKey, p: &Publish) {
        let Some(store) = &self.store else { return };
        if store.streams.is_empty() {
            return;
        }
        let session = self.registry.sessions.get(&from);
        let subject = p.subject();
        for config in store.streams.iter().filter(|s| s.takes(subject)) {
            let append = store::streams::Append {
                stream: config.name.as_str().into(),
                subject: subject.into(),
                sender: session.and_then(|s| s.endpoint.as_deref()).map(Into::into),
                uid: session.map(|s| s.peer.uid),
                body: p.body_bytes(),
            };
            self.appends_weight += append.weight();
            self.appends.push(append);
        }
    }

    /// A retained value set or cleared, to keep across restarts.
    pub(super) fn keep_retained(
        &mut self,
        subject: &str,
        value: Option<crate::protocol::EventTail>,
    ) {
        if self.store.is_some() {
            self.retains.push((subject.into(), value.map(|t| t.0)));
        }
    }

    /// Sends the publishes to keep and the retained values gathered while
    /// handling a batch, as one request each: the store takes them in one
    /// transaction.
    pub(super) fn flush_appends(&mut self) {
        let Some(store) = &self.store else { return };
        if !self.retains.is_empty() {
            let retains = std::mem::take(&mut self.retains);
            let n = retains.len();
            let request = store::Request {
                session: super::EMITTER,
                rid: None,
                op: StoreOp::Retain(retains),
            };
            if store.send(request).is_err() {
                self.counters.retained_not_kept += n as u64;
                tracing::warn!(
                    values = n,
                    "the store is too far behind: retained values were set but not kept on disk"
                );
            }
        }
        if self.appends.is_empty() {
            return;
        }
        let appends = std::mem::take(&mut self.appends);
        let weight = std::mem::take(&mut self.appends_weight);
        if let Err(n) = store.append(appends, weight) {
            self.counters.stream_drops += n as u64;
            tracing::warn!(
                publishes = n,
                "the store is too far behind: publishes were delivered but not kept in their streams"
            );
        }
    }

    /// Delivers a replay chunk; its next chunk is asked for when the client
    /// has room.
    pub(super) fn replay_chunk(&mut self, session: SessionKey, rid: Option<&Rid>, chunk: Chunk) {
        let mut frames = chunk.frames.into_iter();
        if let Some(first) = frames.next() {
            if !self.answer(session, rid, first) {
                return;
            }
        }
        for frame in frames {
            if !self.deliver(session, frame) {
                return;
            }
        }
        if let Some(cursor) = chunk.next {
            self.pace(session, StoreOp::ReplayNext(cursor));
        }
    }

    /// Delivers a durable consumer's messages; more are asked for when the
    /// client has room.
    pub(super) fn consumer_deliveries(&mut self, session: SessionKey, d: Deliveries) {
        for frame in d.frames {
            if !self.deliver(session, frame) {
                return;
            }
        }
        let (stream, durable) = (d.stream, d.durable);
        self.pace(session, StoreOp::ConsumeNext { stream, durable });
    }

    fn pace(&mut self, session: SessionKey, op: StoreOp) {
        self.paced.push(store::Request {
            session,
            rid: None,
            op,
        });
        self.resume_paced();
    }

    /// Asks the store for the next chunk of each replay, and more of each
    /// consumer, whose client has drained its outbox below low water. Not
    /// sooner: a chunk that takes the outbox past high water holds back the
    /// client's own reading (its acks, say) until it drains to low water, so
    /// pacing at high water would keep it from ever being read.
    pub(super) fn resume_paced(&mut self) {
        let waiting = std::mem::take(&mut self.paced);
        for request in waiting {
            let Some(session) = self.registry.sessions.get(&request.session) else {
                continue; // the client left: the replay ends, the store releases the consumer
            };
            if !session.outbox.below_low() {
                self.paced.push(request);
                continue;
            }
            let Some(store) = &self.store else { continue };
            if let Err(refused) = store.send(request) {
                let (request, _) = *refused;
                self.paced.push(request); // the store is behind: later
                tracing::debug!(
                    "replay chunk or consumer deliveries deferred: the store is behind"
                );
            }
        }
    }
}
