//! The router's side of feature `rpc`: requests go to their responders with a
//! `reply_to` token, replies come back as `response`s, and one heap of
//! deadlines (not a task per request) ends those nobody answered in time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use tracing::debug;

use super::registry::SessionKey;
use super::Router;
use crate::protocol::reply::REPLY_PREFIX;
use crate::protocol::request::{self, Gather};
use crate::protocol::EventTail;
use crate::protocol::{Ask, ErrorCode, Feature, MonitorKind, Reply, Rid, Target};

/// Most requests one connection may have waiting for responses.
pub const MAX_PENDING_REQUESTS: usize = 1024;

/// A request waiting for responses.
#[derive(Debug)]
pub(super) struct Pending {
    requester: SessionKey,
    rid: Rid,
    deadline: Instant,
    /// One entry per copy sent and not yet answered.
    responders: Vec<SessionKey>,
    gather: Option<Gather>,
    got: usize,
}

/// Every pending request, by its `reply_to` token, and their deadlines.
#[derive(Debug, Default)]
pub(super) struct Asks {
    pending: HashMap<u64, Pending>,
    /// Deadlines, earliest first; an entry whose request is gone is skipped.
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    last_token: u64,
}

impl Asks {
    /// When the router must next look at deadlines.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((t, _))| *t)
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Drops deadlines of requests already ended once they outnumber the
    /// pending ones, so answered requests do not linger until their timeout.
    fn compact(&mut self) {
        if self.deadlines.len() > 2 * self.pending.len() + 1024 {
            let pending = &self.pending;
            self.deadlines
                .retain(|Reverse((t, token))| pending.get(token).is_some_and(|p| p.deadline == *t));
        }
    }
}

/// The token in a `reply_to` address.
fn token_of(reply_to: &str) -> Option<u64> {
    reply_to.strip_prefix(REPLY_PREFIX)?.parse().ok()
}

impl Router {
    pub(super) fn ask(&mut self, key: SessionKey, rid: Option<&Rid>, ask: Ask) {
        // The parser requires a rid on requests.
        let Some(rid) = rid.cloned() else { return };
        self.counters.requests += 1;
        let Some(session) = self.registry.sessions.get(&key) else {
            return;
        };
        if session.asked.len() >= MAX_PENDING_REQUESTS {
            let detail = format!(
                "this connection already has {MAX_PENDING_REQUESTS} requests waiting for responses; wait for some"
            );
            self.deliver(
                key,
                request::error(ErrorCode::TooManyRequests, detail, &rid),
            );
            return;
        }
        let from = session.from().map(str::to_owned);
        // (responder, sid) pairs; sid is None for a request sent `to` an endpoint.
        let (subject, responders): (Option<&str>, Vec<(SessionKey, Option<u64>)>) =
            match &ask.target {
                Target::Subject(subject) => (
                    Some(subject),
                    self.recipients(subject, true)
                        .into_iter()
                        .map(|(k, sid, _)| (k, Some(sid)))
                        .collect(),
                ),
                Target::To(to) => (
                    None,
                    self.registry
                        .endpoint(to)
                        .map(|k| (k, None))
                        .into_iter()
                        .collect(),
                ),
            };
        self.monitor_frame(key, MonitorKind::Request, subject, &ask.frame, None);
        if responders.is_empty() {
            self.counters.no_responders += 1;
            let detail = match &ask.target {
                Target::Subject(s) => format!("no subscriber with `rpc` matches `{s}`"),
                Target::To(to) => format!("endpoint `{to}` is not connected"),
            };
            self.deliver(key, request::error(ErrorCode::NoResponders, detail, &rid));
            return;
        }
        let tail = EventTail::new(
            subject,
            from.as_deref(),
            &ask.id,
            &ask.ts,
            ask.traceparent.as_deref(),
            ask.body.as_deref(),
        );
        self.asks.last_token += 1;
        let token = self.asks.last_token;
        let reply_to = format!("{REPLY_PREFIX}{token}");
        let single = responders.len() == 1;
        let mut sent = Vec::with_capacity(responders.len());
        let mut too_large = false;
        for (responder, sid) in responders {
            let Some(r) = self.registry.sessions.get_mut(&responder) else {
                continue;
            };
            let head = if r.features.has(Feature::Rpc) {
                request::request_head(sid, &reply_to)
            } else {
                // A hermes endpoint: an ordinary message it answers by `to`.
                let to = r.endpoint.clone().unwrap_or_default();
                request::message_head(&to, &reply_to)
            };
            let frame = tail.frame(&head);
            if frame.len() - crate::frame::HEADER_LEN > self.config.max_frame_len {
                too_large = true;
                continue;
            }
            r.serving.insert(token);
            if self.deliver_message(key, responder, frame, single) {
                sent.push(responder);
            }
        }
        if sent.is_empty() && too_large {
            let detail = format!(
                "the request, as responders get it, would pass the {}-byte frame limit; make it smaller",
                self.config.max_frame_len
            );
            self.deliver(key, request::error(ErrorCode::FrameTooLarge, detail, &rid));
            return;
        }
        let window = ask.gather.map_or(ask.timeout, |g| g.window);
        let deadline = Instant::now() + window;
        self.asks.pending.insert(
            token,
            Pending {
                requester: key,
                rid,
                deadline,
                responders: sent,
                gather: ask.gather,
                got: 0,
            },
        );
        self.asks.deadlines.push(Reverse((deadline, token)));
        if let Some(s) = self.registry.sessions.get_mut(&key) {
            s.asked.insert(token);
        }
        // Every copy may have failed to go (a responder cut as it was sent).
        self.settle(token);
    }

    pub(super) fn reply(&mut self, key: SessionKey, reply: Reply) {
        self.monitor_frame(key, MonitorKind::Reply, None, &reply.frame, None);
        let pending =
            token_of(&reply.reply_to).and_then(|t| Some((t, self.asks.pending.get_mut(&t)?)));
        let Some((token, pending)) = pending else {
            self.late_reply(
                &reply.reply_to,
                "no such request, or it was already answered",
            );
            return;
        };
        let Some(at) = pending.responders.iter().position(|&k| k == key) else {
            self.late_reply(
                &reply.reply_to,
                "from a session the request was not sent to (or already answered)",
            );
            return;
        };
        pending.responders.swap_remove(at);
        pending.got += 1;
        let (requester, rid) = (pending.requester, pending.rid.clone());
        let still_serving = pending.responders.contains(&key);
        let Some(session) = self.registry.sessions.get_mut(&key) else {
            return;
        };
        if !still_serving {
            session.serving.remove(&token);
        }
        let frame = request::response(
            &rid,
            session.endpoint.as_deref(),
            &session.id,
            reply.traceparent.as_deref(),
            reply.body.as_deref(),
        );
        if crate::frame::payload(&frame).len() > self.config.max_frame_len {
            let detail = format!(
                "a response passed the {}-byte frame limit and was not delivered",
                self.config.max_frame_len
            );
            self.deliver(
                requester,
                request::error(ErrorCode::FrameTooLarge, detail, &rid),
            );
            self.finish(token, false);
            return;
        }
        self.counters.responses += 1;
        self.deliver(requester, frame);
        self.settle(token);
    }

    fn late_reply(&mut self, reply_to: &str, why: &str) {
        self.counters.late_replies += 1;
        debug!(reply_to, why, "late or stray reply dropped");
    }

    /// Ends a request when it has all it will get: its first response (or, when
    /// gathering, `max` of them), or no responder left.
    fn settle(&mut self, token: u64) {
        let Some(p) = self.asks.pending.get(&token) else {
            return;
        };
        let done = match p.gather {
            None => p.got > 0,
            Some(g) => p.got >= g.max,
        };
        if done || p.responders.is_empty() {
            self.finish(token, true);
        }
    }

    /// Ends request `token`: the requester gets `gathered`, or an error when no
    /// response came (`why_none` true: its responders left; false: its time ran out).
    fn finish(&mut self, token: u64, responders_left: bool) {
        let Some(p) = self.asks.pending.remove(&token) else {
            return;
        };
        self.asks.compact();
        for responder in &p.responders {
            if let Some(s) = self.registry.sessions.get_mut(responder) {
                s.serving.remove(&token);
            }
        }
        if let Some(s) = self.registry.sessions.get_mut(&p.requester) {
            s.asked.remove(&token);
        }
        if p.gather.is_some() && p.got > 0 {
            self.deliver(p.requester, request::gathered(&p.rid, p.got));
        } else if p.got == 0 {
            let frame = if responders_left && p.responders.is_empty() {
                self.counters.responders_gone += 1;
                request::error(
                    ErrorCode::ResponderGone,
                    "every responder left without answering",
                    &p.rid,
                )
            } else {
                self.counters.request_timeouts += 1;
                request::error(
                    ErrorCode::Timeout,
                    "no response within the request's timeout",
                    &p.rid,
                )
            };
            self.deliver(p.requester, frame);
        }
    }

    /// Ends the requests whose deadline passed.
    pub(super) fn expire_asks(&mut self, now: Instant) {
        while let Some(&Reverse((deadline, token))) = self.asks.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.asks.deadlines.pop();
            if self
                .asks
                .pending
                .get(&token)
                .is_some_and(|p| p.deadline == deadline)
            {
                self.finish(token, false);
            }
        }
    }

    /// What a closing session leaves in rpc: its own requests are forgotten, and
    /// those it was serving lose it as a responder.
    pub(super) fn rpc_session_ended(
        &mut self,
        key: SessionKey,
        session: &super::registry::Session,
    ) {
        if !session.asked.is_empty() {
            for token in &session.asked {
                if let Some(p) = self.asks.pending.remove(token) {
                    for responder in &p.responders {
                        if let Some(s) = self.registry.sessions.get_mut(responder) {
                            s.serving.remove(token);
                        }
                    }
                }
            }
            self.asks.compact();
        }
        for &token in &session.serving {
            if let Some(p) = self.asks.pending.get_mut(&token) {
                p.responders.retain(|&k| k != key);
                self.settle(token);
            }
        }
    }
}
