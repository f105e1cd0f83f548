//! The router's side of feature `topics`: subscribe, publish (with queue groups,
//! retained values and each subscription's `on_full` policy), interest and
//! wills.

use std::collections::HashMap;

use serde_json::json;
use tracing::{debug, warn};

use super::registry::{SessionKey, SubInfo, SubscribeError, MAX_SESSION_SUBSCRIPTIONS};
use super::{subscriptions, Router};
use crate::frame::OutFrame;
use crate::protocol::subscribe::gap;
use crate::protocol::EventTail;
use crate::protocol::{
    self, ErrorCode, Interest, MonitorKind, OnFull, ProtocolError, Publish, Rid, Subscribe, Will,
};
use crate::subject;

/// Most subjects with a retained value.
pub const MAX_RETAINED: usize = 10_000;

/// Most bytes of retained values (their event tails).
pub const MAX_RETAINED_BYTES: usize = 16 << 20;

/// Most `interest`s one session may hold.
pub const MAX_INTERESTS: usize = 1024;

/// Most `interest`s on the bus (each subscription that comes or goes is checked
/// against every one).
pub const MAX_BUS_INTERESTS: usize = 65_536;

/// The last retained value of each subject, kept as the tail of its event.
#[derive(Debug, Default)]
pub(super) struct Retained {
    values: HashMap<Box<str>, EventTail>,
    bytes: usize,
}

impl Retained {
    /// Keeps (or with `None` clears) `subject`'s value; false if it does not fit.
    pub(super) fn set(&mut self, subject: &str, tail: Option<EventTail>) -> bool {
        let old = self.values.get(subject).map_or(0, |t| t.0.len());
        let Some(tail) = tail else {
            if self.values.remove(subject).is_some() {
                self.bytes -= old;
            }
            return true;
        };
        let new = tail.0.len();
        let count_ok = old > 0 || self.values.len() < MAX_RETAINED;
        if !count_ok || self.bytes - old + new > MAX_RETAINED_BYTES {
            return false;
        }
        self.bytes = self.bytes - old + new;
        self.values.insert(subject.into(), tail);
        true
    }

    fn matching<'a>(&'a self, pattern: &'a str) -> Box<dyn Iterator<Item = &'a EventTail> + 'a> {
        if subject::is_literal(pattern) {
            Box::new(self.values.get(pattern).into_iter())
        } else {
            Box::new(
                self.values
                    .iter()
                    .filter(move |(s, _)| subject::matches(pattern, s))
                    .map(|(_, t)| t),
            )
        }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }
}

/// A session watching subscriptions that overlap a pattern come and go.
#[derive(Debug)]
pub(super) struct Watcher {
    key: SessionKey,
    iid: u64,
    pattern: Box<str>,
}

impl Router {
    pub(super) fn subscribe(&mut self, key: SessionKey, rid: Option<&Rid>, sub: Subscribe) {
        let pattern = sub.pattern.clone();
        let sid = match self.registry.subscribe(key, sub) {
            Ok(sid) => sid,
            Err(SubscribeError::NoSession) => return,
            Err(e) => {
                let detail = match e {
                    SubscribeError::SessionFull => format!(
                        "a connection may have at most {MAX_SESSION_SUBSCRIPTIONS} subscriptions; unsubscribe some first"
                    ),
                    _ => "the bus has as many subscriptions as it may hold; try again later".into(),
                };
                let error = ProtocolError::new(ErrorCode::TooManySubscriptions, detail);
                self.answer(key, rid, error.to_frame());
                return;
            }
        };
        self.counters.subscriptions += 1;
        let reply = crate::frame::encode_json(&json!({"type": "subscribed", "sid": sid}));
        self.answer(key, rid, reply);
        let events: Vec<crate::frame::OutFrame> = self
            .retained
            .matching(&pattern)
            .map(|tail| tail.event(sid, true))
            .collect();
        for event in events {
            if !self.has_room(key, event.len()) {
                return; // cut
            }
            self.deliver(key, event);
        }
        let info = self.registry.sessions[&key].subs[&sid].clone();
        self.interest_changed(key, &info, true);
    }

    pub(super) fn unsubscribe(&mut self, key: SessionKey, rid: Option<&Rid>, sid: u64) {
        match self.registry.unsubscribe(key, sid) {
            Some(info) => {
                let reply = crate::frame::encode_json(&json!({"type": "unsubscribed", "sid": sid}));
                self.answer(key, rid, reply);
                self.interest_changed(key, &info, false);
            }
            None => {
                let error = ProtocolError::new(
                    ErrorCode::NoSuchSubscription,
                    format!("this connection has no subscription {sid}"),
                );
                self.answer(key, rid, error.to_frame());
            }
        }
    }

    pub(super) fn publish(&mut self, from: SessionKey, rid: Option<&Rid>, p: Publish) {
        let Some(session) = self.registry.sessions.get(&from) else {
            return;
        };
        let subject = p.subject();
        let tail = EventTail::new(
            Some(subject),
            session.from(),
            p.id(),
            p.ts(),
            p.traceparent(),
            p.body(),
        );
        let in_stream = self.kept_in_stream(subject);
        let extra = if in_stream {
            crate::protocol::streams::EVENT_EXTRA
        } else {
            0
        };
        if tail.max_event_len() + extra > self.config.max_frame_len {
            let mut error = ProtocolError::new(
                ErrorCode::FrameTooLarge,
                format!(
                    "the {} this publish makes would pass the {}-byte frame limit; make it smaller",
                    if in_stream {
                        "stream_event (its subject is kept in a stream)"
                    } else {
                        "event"
                    },
                    self.config.max_frame_len
                ),
            );
            error.id = Some(protocol::MsgId::new(p.id()));
            self.counters.bad_requests += 1;
            self.answer(from, rid, error.to_frame());
            return;
        }
        self.counters.publishes += 1;
        let acks = session.features.acks();
        if p.retain {
            let value = p.body().is_some().then(|| tail.clone());
            let kept = self.retained.set(subject, value.clone());
            if kept {
                self.keep_retained(subject, value);
            } else {
                let error = ProtocolError::new(
                    ErrorCode::RetainedFull,
                    format!(
                        "delivered, but not kept: the bus keeps at most {MAX_RETAINED} retained values and {MAX_RETAINED_BYTES} bytes of them; clear some with a retained publish of `null`"
                    ),
                );
                self.answer(from, rid, error.to_frame());
            }
        }
        let delivered = self.deliver_events(from, subject, tail);
        if in_stream {
            self.stream_append(from, &p);
        }
        self.monitor_frame(from, MonitorKind::Publish, Some(subject), &p.frame, None);
        if let Some(hooks) = &self.config.hooks {
            hooks.notify(&p.frame, 0);
        }
        if acks {
            let id = protocol::MsgId::new(p.id());
            self.answer(from, rid, protocol::ack(&id, delivered));
        }
    }

    /// Pushes one publish's event to every recipient; how many took it. The
    /// last one's event takes the tail itself.
    pub(super) fn deliver_events(
        &mut self,
        from: SessionKey,
        subject: &str,
        tail: EventTail,
    ) -> usize {
        let recipients = self.recipients(subject, false);
        let single = recipients.len() == 1;
        let mut delivered = 0;
        let mut tail = Some(tail);
        for (i, &(key, sid, on_full)) in recipients.iter().enumerate() {
            let last = i + 1 == recipients.len();
            let Some(tail) = (if last { tail.take() } else { tail.clone() }) else {
                break;
            };
            let event = tail.into_event(sid, false);
            delivered += usize::from(self.deliver_event(from, key, sid, on_full, event, single));
        }
        self.recipients_scratch = recipients;
        self.counters.events_delivered += delivered as u64;
        delivered
    }

    /// The subscriptions a publish (or, with `rpc_only`, a request) on `subject`
    /// goes to: every match, one member per queue group.
    pub(super) fn recipients(
        &mut self,
        subject: &str,
        rpc_only: bool,
    ) -> Vec<(SessionKey, u64, OnFull)> {
        // Reused from publish to publish: no allocation on the common path.
        let mut out = std::mem::take(&mut self.recipients_scratch);
        out.clear();
        if self.registry.subscriptions.is_empty() {
            return out;
        }
        let sessions = &self.registry.sessions;
        // Closed sessions' subscriptions not yet taken out of the table are skipped.
        let reaping = self.registry.reaping();
        let mut grouped = false;
        self.registry.subscriptions.for_each_match(subject, |sub| {
            if grouped || (reaping && !sessions.contains_key(&sub.key)) {
                return;
            }
            if rpc_only
                && !sessions
                    .get(&sub.key)
                    .is_some_and(|x| x.features.has(protocol::Feature::Rpc))
            {
                return;
            }
            if sub.queue.is_some() {
                grouped = true;
            } else {
                out.push((sub.key, sub.sid, sub.on_full));
            }
        });
        if !grouped {
            return out;
        }
        // Queue groups (rarer): a second walk, and one member picked per group.
        let mut all: Vec<&subscriptions::Sub> = Vec::with_capacity(out.len() + 4);
        self.registry.subscriptions.for_each_match(subject, |sub| {
            let alive = !reaping || sessions.contains_key(&sub.key);
            let responder = !rpc_only
                || sessions
                    .get(&sub.key)
                    .is_some_and(|x| x.features.has(protocol::Feature::Rpc));
            if alive && responder {
                all.push(sub);
            }
        });
        self.turn = self.turn.wrapping_add(1);
        let mut picked = Vec::with_capacity(all.len());
        subscriptions::recipients(
            &all,
            self.turn,
            |s| sessions.get(&s.key).is_some_and(|x| x.outbox.above_high()),
            &mut picked,
        );
        out.clear();
        out.extend(picked.iter().map(|s| (s.key, s.sid, s.on_full)));
        out
    }

    /// Pushes one event, under the subscription's `on_full` policy (to the
    /// `single` recipient of its publish, or one of several).
    fn deliver_event(
        &mut self,
        from: SessionKey,
        key: SessionKey,
        sid: u64,
        on_full: OnFull,
        event: OutFrame,
        single: bool,
    ) -> bool {
        let Some(session) = self.registry.sessions.get_mut(&key) else {
            return false;
        };
        match on_full {
            OnFull::Pause => {
                self.has_room(key, event.len()) && self.deliver_message(from, key, event, single)
            }
            OnFull::Drop => {
                if session.outbox.above_high() {
                    *session.missed.entry(sid).or_insert(0) += 1;
                    self.counters.events_dropped += 1;
                    self.gapping.insert(key);
                    return false;
                }
                if let Some(missed) = session.missed.remove(&sid) {
                    let _ = session.outbox.push(gap(sid, missed));
                }
                session.outbox.push(event).is_ok()
            }
            OnFull::Disconnect => {
                if session.outbox.above_high() {
                    let detail = format!(
                        "subscription {sid} asked to be disconnected when it cannot keep up, and it could not"
                    );
                    self.cut_slow(
                        key,
                        "subscriber with on_full=disconnect fell behind: disconnecting it",
                        detail,
                    );
                    return false;
                }
                session.outbox.push(event).is_ok()
            }
        }
    }

    /// Sends the `gap` frames owed to subscribers (and monitors) that have room again.
    pub(super) fn send_gaps(&mut self) {
        let sessions = &mut self.registry.sessions;
        self.gapping.retain(|key| {
            let Some(session) = sessions.get_mut(key) else {
                return false;
            };
            if session.outbox.above_high() {
                return true;
            }
            for (sid, missed) in session.missed.drain() {
                let _ = session.outbox.push(gap(sid, missed));
            }
            false
        });
    }

    pub(super) fn interest(&mut self, key: SessionKey, rid: Option<&Rid>, interest: Interest) {
        let held = self.interests.iter().filter(|w| w.key == key).count();
        let Some(session) = self.registry.sessions.get_mut(&key) else {
            return;
        };
        if held >= MAX_INTERESTS || self.interests.len() >= MAX_BUS_INTERESTS {
            let error = ProtocolError::new(
                ErrorCode::TooManySubscriptions,
                format!(
                    "a connection may hold at most {MAX_INTERESTS} interests, the bus {MAX_BUS_INTERESTS}"
                ),
            );
            self.answer(key, rid, error.to_frame());
            return;
        }
        let iid = session.next_sid();
        let pattern = interest.pattern;
        // The listing must fit in a frame: past half the limit, the rest is
        // only counted (`more`); changes still come one by one.
        let room = self.config.max_frame_len / 2;
        let (mut listed, mut bytes, mut more) = (Vec::new(), 0usize, 0u64);
        for s in self.registry.sessions.values() {
            for sub in s.subs.values() {
                if !subject::overlaps(&pattern, &sub.pattern) {
                    continue;
                }
                // At most: JSON escapes double a pattern (no control characters)
                // and multiply an endpoint name by six.
                let size =
                    128 + 2 * sub.pattern.len() + s.endpoint.as_ref().map_or(0, |e| 6 * e.len());
                if bytes + size > room {
                    more += 1;
                } else {
                    bytes += size;
                    listed.push(who(s, sub));
                }
            }
        }
        let reply = crate::frame::encode_json(&json!({
            "type": "interest", "iid": iid, "subscriptions": listed, "more": more,
        }));
        self.answer(key, rid, reply);
        self.interests.push(Watcher { key, iid, pattern });
    }

    pub(super) fn uninterest(&mut self, key: SessionKey, rid: Option<&Rid>, iid: u64) {
        let before = self.interests.len();
        self.interests.retain(|w| !(w.key == key && w.iid == iid));
        let frame = if self.interests.len() < before {
            crate::frame::encode_json(&json!({"type": "uninterested", "iid": iid}))
        } else {
            ProtocolError::new(
                ErrorCode::NoSuchSubscription,
                format!("this connection has no interest {iid}"),
            )
            .to_frame()
        };
        self.answer(key, rid, frame);
    }

    /// A later `hello` without `topics`: the session's subscriptions and
    /// interests end, as its frames would be refused.
    pub(super) fn topics_dropped(&mut self, key: SessionKey) {
        self.interests.retain(|w| w.key != key);
        let sids: Vec<u64> = self
            .registry
            .sessions
            .get(&key)
            .map(|s| s.subs.keys().copied().collect())
            .unwrap_or_default();
        for sid in sids {
            if let Some(info) = self.registry.unsubscribe(key, sid) {
                self.interest_changed(key, &info, false);
            }
        }
    }

    /// Tells the watchers whose pattern overlaps `sub`'s that it came or went.
    pub(super) fn interest_changed(&mut self, key: SessionKey, sub: &SubInfo, is_add: bool) {
        if self.interests.is_empty() {
            return;
        }
        if let Some(s) = self.registry.sessions.get(&key) {
            let who = who(s, sub);
            self.tell_watchers(&sub.pattern, who, is_add);
        }
    }

    /// Sends `interest_change` (`who`, `is_add`) to every watcher of a pattern
    /// overlapping `pattern`.
    fn tell_watchers(&mut self, pattern: &str, mut body: serde_json::Value, is_add: bool) {
        let watchers: Vec<(SessionKey, u64)> = self
            .interests
            .iter()
            .filter(|w| subject::overlaps(&w.pattern, pattern))
            .map(|w| (w.key, w.iid))
            .collect();
        body["type"] = "interest_change".into();
        body["is_add"] = is_add.into();
        for (watcher, iid) in watchers {
            body["iid"] = iid.into();
            let frame = crate::frame::encode_json(&body);
            if self.has_room(watcher, frame.len()) {
                self.deliver(watcher, frame);
            }
        }
    }

    /// What a session leaves behind in topics: watchers are told its
    /// subscriptions went, its own watchers go, and its will is published
    /// (unless it said `bye` or the bus is stopping).
    pub(super) fn topics_session_ended(
        &mut self,
        key: SessionKey,
        session: &mut super::registry::Session,
    ) {
        self.interests.retain(|w| w.key != key);
        if !self.interests.is_empty() {
            // The session is out of the registry: described from what it left.
            for sub in session.subs.values() {
                self.tell_watchers(&sub.pattern, who(session, sub), false);
            }
        }
        if let Some(will) = session.will.take() {
            if !self.shutting_down {
                self.publish_will(session, will);
            }
        }
    }

    /// Publishes an event the bus itself emits (no sender), e.g. `$jobs.<goal>.dead`.
    pub(super) fn publish_internal(&mut self, subject: &str, body: &[u8]) {
        self.counters.publishes += 1;
        let id = format!("\"{}\"", protocol::new_id());
        let ts = format!("{:?}", protocol::unix_now());
        let tail = EventTail::new(
            Some(subject),
            None,
            id.as_bytes(),
            ts.as_bytes(),
            None,
            Some(body),
        );
        if tail.max_event_len() > self.config.max_frame_len {
            self.counters.undeliverable += 1;
            return;
        }
        self.deliver_events(super::EMITTER, subject, tail);
    }

    fn publish_will(&mut self, session: &super::registry::Session, will: Will) {
        debug!(subject = %will.subject, "publishing a will");
        self.counters.publishes += 1;
        self.counters.wills += 1;
        let id = format!("\"{}\"", protocol::new_id());
        let ts = format!("{:?}", protocol::unix_now());
        let tail = EventTail::new(
            Some(&will.subject),
            session.from(),
            id.as_bytes(),
            ts.as_bytes(),
            None,
            will.body.as_deref(),
        );
        if tail.max_event_len() > self.config.max_frame_len {
            self.counters.undeliverable += 1;
            warn!(
                subject = %will.subject,
                "a will would pass the frame limit as an event: not published"
            );
            return;
        }
        if will.retain {
            let value = will.body.is_some().then(|| tail.clone());
            if self.retained.set(&will.subject, value.clone()) {
                self.keep_retained(&will.subject, value);
            } else {
                debug!(subject = %will.subject, "retained store full: will delivered, not kept");
            }
        }
        // From no connection: nobody to hold back.
        self.deliver_events(super::EMITTER, &will.subject, tail);
    }
}

/// A subscription as `interest` frames describe it.
fn who(s: &super::registry::Session, sub: &SubInfo) -> serde_json::Value {
    json!({
        "subject": sub.pattern,
        "queue": sub.queue.as_deref(),
        "session": s.id,
        "endpoint": s.endpoint,
        "uid": s.peer.uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::Bytes;

    fn tail(n: usize) -> EventTail {
        EventTail(Bytes::from(vec![b'x'; n]))
    }

    #[test]
    fn retained_values_are_bounded_and_cleared() {
        let mut r = Retained::default();
        assert!(r.set("a", Some(tail(10))));
        assert!(r.set("a", Some(tail(20))), "replacing");
        assert_eq!((r.len(), r.bytes), (1, 20));
        assert!(
            !r.set("b", Some(tail(MAX_RETAINED_BYTES))),
            "over the bytes"
        );
        assert!(r.set("a", None));
        assert_eq!((r.len(), r.bytes), (0, 0));
        for i in 0..MAX_RETAINED {
            assert!(r.set(&format!("s.{i}"), Some(tail(1))));
        }
        assert!(!r.set("one.more", Some(tail(1))), "over the count");
        assert!(
            r.set("s.0", Some(tail(2))),
            "replacing still works when full"
        );
        assert_eq!(r.matching("s.*").count(), MAX_RETAINED);
        assert_eq!(r.matching("s.5").count(), 1);
    }
}
