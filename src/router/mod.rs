//! The router: an actor that owns the endpoint map and every session.
//!
//! Connections talk to it over one bounded channel ([`Command`]). It never awaits a
//! client: replies and routed frames go into each session's [`Outbox`] with a
//! non-blocking push. A message that takes an outbox past high water holds its
//! sender back ([`crate::flow`]); frames that find it full wait in order, parked
//! behind it; an outbox that stalls past high water for the stall timeout gets its
//! client disconnected (`slow_consumer`). It also enforces the heartbeat timeout.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::budget::Budget;
use crate::flow::{Flow, Slot};
use crate::frame::OutFrame;
use crate::hooks::runtime::HookRuntime;
use crate::outbox::Outbox;
use crate::peer::Peer;
use crate::protocol::{self, ErrorCode, MonitorKind, Op, ProtocolError, Request, Rid, Routed};

/// Commands queued to the router at most; readers wait (and stop reading their
/// socket) when it is full, which is the bus's backpressure.
pub const ROUTER_QUEUE: usize = 1024;

/// Default time a registered session may stay silent (no ping, no message).
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(90);

/// How often outboxes are checked for receivers that stopped reading.
pub const STALL_CHECK_EVERY: Duration = Duration::from_millis(250);

/// While the memory budget is pressed, a receiver may hold at most this fraction
/// of it in queued and parked frames.
pub const MEMORY_SHARES: usize = 4;

/// A receiver is cut at once when frames for it would pass this fraction of
/// the memory budget (1/2).
pub const MEMORY_HARD_SHARES: usize = 2;

/// How long a receiver may hold more than its share of a pressed budget.
pub const SHARE_GRACE: Duration = Duration::from_secs(1);

/// While frames are parked behind full outboxes, how often the router moves them
/// on (it also does at every push to such an outbox).
pub const UNPARK_EVERY: Duration = Duration::from_millis(1);

/// Default time a receiver may make no progress while its outbox is past high
/// water before it is disconnected as a slow consumer.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Router time one client's batch of requests may take before the rest of it
/// waits for the next tick ([`UNPARK_EVERY`]), so a client whose requests are
/// costly (publishes into a huge subscription table, `interest` scans) cannot
/// hold the router from everyone else.
pub const ROUTER_SLICE: Duration = Duration::from_millis(2);

/// The clock is read after every costly request, and after this many cheap
/// ones (messages; a publish counts [`PUBLISH_WEIGHT`] and its events).
const ROUTER_CHECK_EVERY: u32 = 64;

/// What a publish counts towards [`ROUTER_CHECK_EVERY`], besides one per event
/// it delivers.
const PUBLISH_WEIGHT: u32 = 8;

/// Longest interval between heartbeat sweeps.
pub const HEARTBEAT_CHECK_EVERY: Duration = Duration::from_secs(15);

mod jobs;
mod kv;
mod monitor;
mod registry;
mod rpc;
mod store;
mod streams;
mod subscriptions;
mod topics;

pub use registry::SessionKey;
use registry::{KeyHash, Registration, Registry, Session};
pub use rpc::MAX_PENDING_REQUESTS;
pub use subscriptions::{Sub, Subscriptions};
pub use topics::{MAX_INTERESTS, MAX_RETAINED, MAX_RETAINED_BYTES};

/// The sender of messages emitted by hooks; no connection has this key.
pub const EMITTER: SessionKey = 0;

/// What connections tell the router.
#[derive(Debug)]
pub enum Command {
    /// A new connection, with the outbox its writer drains.
    Open {
        key: SessionKey,
        peer: Peer,
        outbox: Outbox,
        flow: Arc<Flow>,
    },
    /// Requests read from one connection, in order.
    Requests {
        key: SessionKey,
        requests: Vec<Request>,
        /// The batch's in-flight slot ([`crate::flow::MAX_IN_FLIGHT`]), freed once
        /// it is handled.
        slot: Slot,
    },
    /// The connection's reader stopped (EOF, error or shutdown).
    Closed { key: SessionKey },
    /// The accept loop turned a connection away.
    Rejected,
    /// A message a hook emitted.
    Emitted(Routed),
    /// The server is stopping: every session is told (`shutting_down`) and closed
    /// once its queued frames are written.
    ShuttingDown,
}

/// Settings the router needs.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub socket_path: PathBuf,
    pub max_frame_len: usize,
    pub heartbeat_timeout: Duration,
    /// A receiver past high water with no progress for this long is cut.
    pub stall_timeout: Duration,
    pub hooks: Option<Arc<HookRuntime>>,
    pub budget: Arc<Budget>,
    /// Told of each command handled, so the runtime polls on while work flows.
    pub spin: Arc<crate::spin::Spin>,
}

/// Counters reported by `status`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counters {
    pub connections_opened: u64,
    pub connections_rejected: u64,
    pub messages_routed: u64,
    pub frames_delivered: u64,
    pub broadcasts: u64,
    pub undeliverable: u64,
    /// Frames that were not a JSON object, or too large.
    pub bad_frames: u64,
    /// Well-formed frames refused for what they ask (`bad_request`,
    /// `unknown_type`, `bad_subject`, `not_negotiated`, a publish whose event
    /// would pass the frame limit, …).
    pub bad_requests: u64,
    pub replaced: u64,
    pub heartbeat_timeouts: u64,
    pub slow_consumer_disconnects: u64,
    pub emitted: u64,
    /// Messages filter hooks dropped.
    pub filtered_out: u64,
    pub subscriptions: u64,
    pub publishes: u64,
    /// Events queued for subscribers.
    pub events_delivered: u64,
    /// Events skipped for `on_full: drop` subscribers that could not keep up.
    pub events_dropped: u64,
    pub wills: u64,
    pub requests: u64,
    pub responses: u64,
    pub no_responders: u64,
    pub request_timeouts: u64,
    pub responders_gone: u64,
    /// Replies to requests already answered, timed out or unknown.
    pub late_replies: u64,
    /// Frames a monitor that could not keep up missed.
    pub monitor_dropped: u64,
    /// Persistent requests answered `storage_unavailable`.
    pub storage_refusals: u64,
    /// KV watches ended because their watcher fell behind.
    pub watches_ended: u64,
    /// Publishes delivered but not kept in their stream (the store was behind).
    pub stream_drops: u64,
    /// Times a publisher was held back until the store committed the stream
    /// appends queued before its publishes.
    pub store_waits: u64,
    /// Retained values set but not kept on disk (the store was behind).
    pub retained_not_kept: u64,
}

/// How the router ends a session.
enum Close {
    /// Drop the outbox: the writer delivers what is queued, then closes.
    Flush,
    /// Queue this error frame last, then as `Flush`.
    FlushWith(Bytes),
    /// Discard what is queued and write this error frame at once.
    Abort(Bytes),
}

/// The router actor's state.
pub struct Router {
    config: RouterConfig,
    started: Instant,
    registry: Registry,
    counters: Counters,
    /// Sessions with frames parked behind a full outbox.
    parked: HashSet<SessionKey, KeyHash>,
    /// Sessions with requests waiting for them to read their answers.
    deferring: HashSet<SessionKey, KeyHash>,
    /// Answers (replies, errors, acks) pushed so far.
    answers: u64,
    /// The memory budget's wait count at the last stall check.
    budget_waits_seen: u64,
    /// Retained values by subject.
    retained: topics::Retained,
    /// Sessions watching subscriptions come and go.
    interests: Vec<topics::Watcher>,
    /// Requests waiting for responses.
    asks: rpc::Asks,
    /// Sessions with a monitor.
    monitors: Vec<SessionKey>,
    /// Sessions owed `gap` frames once they have room.
    gapping: HashSet<SessionKey, KeyHash>,
    /// Rotates the choice of member inside queue groups.
    turn: u64,
    /// Counts the loop's turns: a client gets at most one frame written
    /// directly per turn ([`Outbox::send`]).
    round: u64,
    /// The recipients of the publish being routed, kept to be reused.
    recipients_scratch: Vec<(SessionKey, u64, protocol::OnFull)>,
    /// The bus is stopping: sessions end, but not by their own doing (no wills).
    shutting_down: bool,
    /// The durable store, if the bus has a state directory.
    store: Option<crate::store::Store>,
    /// The KV's committed values and its watches.
    kv: kv::Kv,
    /// Sessions that sent job requests or consume a stream (told to the store
    /// when they end).
    store_sessions: HashSet<SessionKey, KeyHash>,
    /// Such sessions that ended, not yet told to the store (its queue was full).
    closes_pending: Vec<SessionKey>,
    /// Replays and consumers waiting for their client to have room for more:
    /// the requests that ask the store for it.
    paced: Vec<crate::store::Request>,
    /// Publishes to keep in streams, and retained values set or cleared, sent
    /// to the store as one request each per batch of requests handled.
    appends: Vec<crate::store::streams::Append>,
    /// Their weight in the store's backlog.
    appends_weight: usize,
    retains: Vec<crate::store::retained::Change>,
    last_replay: u64,
}

impl Router {
    pub fn new(config: RouterConfig) -> Self {
        Self {
            config,
            started: Instant::now(),
            registry: Registry::default(),
            counters: Counters::default(),
            parked: HashSet::default(),
            deferring: HashSet::default(),
            answers: 0,
            budget_waits_seen: 0,
            retained: topics::Retained::default(),
            interests: Vec::new(),
            asks: rpc::Asks::default(),
            monitors: Vec::new(),
            gapping: HashSet::default(),
            turn: 0,
            round: 0,
            recipients_scratch: Vec::new(),
            shutting_down: false,
            store: None,
            kv: kv::Kv::default(),
            store_sessions: HashSet::default(),
            paced: Vec::new(),
            appends: Vec::new(),
            appends_weight: 0,
            retains: Vec::new(),
            closes_pending: Vec::new(),
            last_replay: 0,
        }
    }

    /// A router with a durable store, whose KV holds `entries` (`None`: the
    /// store could not be read yet), and the retained values it kept.
    pub fn with_store(
        mut self,
        store: crate::store::Store,
        entries: Option<Vec<crate::store::kv::Entry>>,
        retained: Vec<(String, Bytes)>,
    ) -> Self {
        self.store = Some(store);
        if let Some(entries) = entries {
            self.kv.load(entries);
        }
        for (subject, tail) in retained {
            self.retained.set(&subject, Some(protocol::EventTail(tail)));
        }
        self
    }

    /// Runs until every [`Command`] sender is gone, then drops all sessions so their
    /// writers flush and exit.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut from_store: Option<mpsc::Receiver<crate::store::FromStore>>,
    ) {
        let check_every = (self.config.heartbeat_timeout / 3).min(HEARTBEAT_CHECK_EVERY);
        let mut sweep = tokio::time::interval(check_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stalls = tokio::time::interval(STALL_CHECK_EVERY);
        stalls.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Polled only while frames are parked.
        let mut unpark = tokio::time::interval(UNPARK_EVERY);
        unpark.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One timer for every request deadline, set to the earliest.
        let deadline = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(deadline);
        let mut armed: Option<Instant> = None;
        loop {
            self.round += 1;
            let next = self.asks.next_deadline();
            if next != armed {
                if let Some(at) = next {
                    deadline.as_mut().reset(tokio::time::Instant::from_std(at));
                }
                armed = next;
            }
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd),
                    None => break,
                },
                Some(msg) = async { from_store.as_mut()?.recv().await }, if from_store.is_some() => {
                    self.store_done(msg);
                }
                _ = sweep.tick() => self.expire(Instant::now()),
                _ = stalls.tick() => self.cut_stalled(),
                _ = unpark.tick(), if !self.parked.is_empty() || !self.deferring.is_empty() || !self.gapping.is_empty() || self.registry.reaping() || !self.paced.is_empty() || !self.closes_pending.is_empty() || !self.retains.is_empty() || !self.appends.is_empty() => {
                    self.unpark();
                    self.resume_paced();
                    self.tell_closes();
                    self.flush_appends();
                    self.resume_deferred();
                    self.send_gaps();
                    self.registry.reap();
                }
                () = &mut deadline, if armed.is_some() => {
                    armed = None;
                    self.expire_asks(Instant::now());
                }
            }
        }
        debug!(sessions = self.registry.sessions.len(), "router stopped");
    }

    fn handle(&mut self, cmd: Command) {
        self.config.spin.touch();
        match cmd {
            Command::Open {
                key,
                peer,
                outbox,
                flow,
            } => {
                self.counters.connections_opened += 1;
                let session = Session::new(peer, outbox, flow);
                debug!(key, session_id = %session.id, "session opened");
                self.registry.open(key, session);
            }
            Command::Requests {
                key,
                requests,
                slot,
            } => {
                let Some(session) = self.registry.sessions.get_mut(&key) else {
                    return; // closed by the router while its reader was still sending
                };
                // Any request shows the client is alive (the clock is read once
                // per batch, not per message).
                session.last_seen = Instant::now();
                // Earlier requests of this client wait for it to read: these go
                // after them.
                if !session.deferred.is_empty() {
                    session.deferred.push_back((requests.into(), slot));
                    return;
                }
                self.requests(key, requests.into(), slot);
                self.flush_appends();
            }
            Command::Closed { key } => {
                // What it sent before it left is handled, answered or not, a
                // slice at a time like any client's; then the session closes.
                if let Some(session) = self.registry.sessions.get_mut(&key) {
                    if !session.deferred.is_empty() {
                        session.closing = true;
                        self.deferring.insert(key);
                        return;
                    }
                }
                self.close(key, Close::Flush);
            }
            Command::Rejected => self.counters.connections_rejected += 1,
            Command::Emitted(msg) => {
                self.counters.emitted += 1;
                self.route(EMITTER, msg, None);
            }
            Command::ShuttingDown => {
                self.shutting_down = true;
                let frame = ProtocolError::new(
                    ErrorCode::ShuttingDown,
                    "the bus is shutting down; reconnect when it is back",
                )
                .to_frame();
                // hermes-bus clients would take the notice for a message: they
                // see the connection close, as a hermes-bus server does it.
                let sessions: Vec<(SessionKey, bool)> = self
                    .registry
                    .sessions
                    .iter()
                    .map(|(&k, s)| (k, s.negotiated))
                    .collect();
                for (key, negotiated) in sessions {
                    let how = if negotiated {
                        Close::FlushWith(frame.clone())
                    } else {
                        Close::Flush
                    };
                    self.close(key, how);
                }
            }
        }
    }

    fn request(&mut self, key: SessionKey, request: Request) {
        let Request { rid, op } = request;
        let rid = rid.as_ref();
        let Some(session) = self.registry.sessions.get_mut(&key) else {
            return; // closed by the router while its reader was still sending
        };
        if let Some(feature) = op.feature().filter(|&f| !session.features.has(f)) {
            let name = feature.name();
            let detail = format!(
                "this frame type needs the `{name}` feature: send {{\"type\":\"hello\",\"protocol\":{},\"features\":[\"{name}\"]}} first",
                protocol::PROTOCOL_VERSION
            );
            let frame = ProtocolError::new(ErrorCode::NotNegotiated, detail).to_frame();
            self.counters.bad_requests += 1;
            self.answer(key, rid, frame);
            return;
        }
        match op {
            Op::Message(msg) => self.route(key, msg, rid),
            Op::Ping => {
                self.answer(key, rid, protocol::pong());
            }
            Op::Register { endpoint } => self.register(key, rid, endpoint),
            Op::ListEndpoints => {
                let frame = crate::frame::encode_json(&serde_json::json!({
                    "type": "endpoints_list", "endpoints": self.registry.endpoint_ids(),
                }));
                self.answer(key, rid, frame);
            }
            Op::Hello { features, will } => {
                let had_topics = session.features.has(protocol::Feature::Topics);
                session.features = features;
                session.negotiated = true;
                session.will = will.map(|w| *w);
                if !features.has(protocol::Feature::Monitor) && session.monitor.take().is_some() {
                    self.monitors.retain(|&k| k != key);
                }
                if had_topics && !features.has(protocol::Feature::Topics) {
                    self.topics_dropped(key);
                }
                let frame = protocol::welcome(features, self.config.max_frame_len);
                self.answer(key, rid, frame);
            }
            Op::Bye => {
                session.will = None;
                self.answer(key, rid, crate::frame::encode(br#"{"type":"bye"}"#));
            }
            Op::Status => {
                let frame = self.status_frame();
                self.answer(key, rid, frame);
            }
            Op::HooksStatus => {
                let frame = match &self.config.hooks {
                    Some(hooks) => {
                        let mut status = hooks.status();
                        status["type"] = "hooks_status".into();
                        crate::frame::encode_json(&status)
                    }
                    None => ProtocolError::new(
                        ErrorCode::BadRequest,
                        "this bus runs without a hook engine",
                    )
                    .to_frame(),
                };
                self.answer(key, rid, frame);
            }
            Op::Subscribe(sub) => self.subscribe(key, rid, sub),
            Op::Unsubscribe { sid } => self.unsubscribe(key, rid, sid),
            Op::Publish(publish) => self.publish(key, rid, *publish),
            Op::Interest(interest) => self.interest(key, rid, interest),
            Op::Uninterest { iid } => self.uninterest(key, rid, iid),
            Op::Ask(ask) => self.ask(key, rid, *ask),
            Op::Reply(reply) => self.reply(key, *reply),
            Op::Monitor(filter) => self.start_monitor(key, rid, filter),
            Op::Kv(op) => self.kv(key, rid, *op),
            Op::Job(job) => self.job(key, rid, *job),
            Op::Stream(op) => self.stream_request(key, rid, *op),
            Op::Dropped(dropped) => {
                self.counters.filtered_out += 1;
                let hook = Some((dropped.hook.as_str(), dropped.reason.as_str()));
                self.monitor_frame(key, MonitorKind::Dropped, None, &dropped.frame, hook);
                if dropped.was_request {
                    let detail = format!("dropped by hook {}: {}", dropped.hook, dropped.reason);
                    let error = ProtocolError::new(ErrorCode::Dropped, detail).to_frame();
                    self.answer(key, rid, error);
                } else if self
                    .registry
                    .sessions
                    .get(&key)
                    .is_some_and(|s| s.features.acks())
                {
                    self.answer(key, rid, protocol::ack_dropped(&dropped));
                }
            }
            Op::Invalid(error) => {
                if matches!(error.code, ErrorCode::BadFrame | ErrorCode::FrameTooLarge) {
                    self.counters.bad_frames += 1;
                } else {
                    self.counters.bad_requests += 1;
                }
                debug!(key, %error, "refused");
                // The parser put the rid in already.
                self.deliver(key, error.to_frame());
            }
        }
    }

    /// Pushes the answer to a request, with the request's `rid`.
    fn answer(&mut self, key: SessionKey, rid: Option<&Rid>, frame: Bytes) -> bool {
        self.deliver(key, protocol::with_rid(frame, rid))
    }

    fn register(&mut self, key: SessionKey, rid: Option<&Rid>, endpoint: String) {
        match self.registry.register(key, &endpoint) {
            None => return,
            Some(Registration::AlreadyAs(current)) => {
                let detail = format!("this connection is already registered as `{current}`; open another connection for another name");
                let frame = ProtocolError::new(ErrorCode::AlreadyRegistered, detail).to_frame();
                self.answer(key, rid, frame);
                return;
            }
            Some(Registration::TookOver(old)) => {
                self.counters.replaced += 1;
                info!(
                    endpoint,
                    "endpoint re-registered: closing the previous session"
                );
                let detail = format!("endpoint `{endpoint}` was registered by another connection");
                let frame = ProtocolError::new(ErrorCode::Replaced, detail).to_frame();
                self.close(old, Close::FlushWith(frame));
            }
            Some(Registration::Registered) => {}
        }
        let id = &self.registry.sessions[&key].id;
        info!(endpoint, session_id = %id, "registered");
        let reply = protocol::registered(&endpoint, id);
        self.answer(key, rid, reply);
    }

    fn route(&mut self, from: SessionKey, msg: Routed, rid: Option<&Rid>) {
        self.counters.messages_routed += 1;
        let mut found = true;
        let delivered = match msg.to.as_deref() {
            None => {
                self.counters.broadcasts += 1;
                let mut n = 0;
                let mut filled = Vec::new();
                for (&key, session) in &mut self.registry.sessions {
                    if session.endpoint.is_some() && session.outbox.push(msg.frame.clone()).is_ok()
                    {
                        n += 1;
                        if session.outbox.above_high() {
                            session.holding = true;
                            filled.push(session.outbox.level().clone());
                            if session.outbox.parked() > 0 {
                                self.parked.insert(key);
                            }
                        }
                    }
                }
                if let Some(sender) = self.registry.sessions.get(&from) {
                    for level in &filled {
                        sender.flow.hold(level);
                    }
                }
                n
            }
            Some(to) => match self.registry.endpoint(to) {
                Some(key) => usize::from(self.deliver_message(from, key, msg.frame.clone(), true)),
                None => {
                    self.not_found(from, &msg, to, rid);
                    found = false;
                    0
                }
            },
        };
        self.counters.frames_delivered += delivered as u64;
        self.monitor_frame(from, MonitorKind::Message, None, &msg.frame, None);
        if let Some(hooks) = &self.config.hooks {
            hooks.notify(&msg.frame, msg.hops);
        }
        if found
            && self
                .registry
                .sessions
                .get(&from)
                .is_some_and(|s| s.features.acks())
        {
            self.answer(from, rid, protocol::ack(&msg.id(), delivered));
        }
    }

    /// Pushes a message from `from` into `to`'s outbox, and holds `from` back when
    /// that took the outbox past high water. False if it was not pushed. Only a
    /// `single` recipient may get it written at once by the router
    /// ([`Outbox::send`]); the copies of a fan-out are left to each writer, so
    /// the router does not make their system calls one after the other.
    fn deliver_message(
        &mut self,
        from: SessionKey,
        to: SessionKey,
        frame: impl Into<OutFrame>,
        single: bool,
    ) -> bool {
        let Some(receiver) = self.registry.sessions.get_mut(&to) else {
            return false;
        };
        let pushed = if single {
            receiver.outbox.send(frame, self.round)
        } else {
            receiver.outbox.push(frame)
        };
        if pushed.is_err() {
            return false;
        }
        if receiver.outbox.above_high() {
            if receiver.outbox.parked() > 0 {
                self.parked.insert(to);
            }
            receiver.holding = true;
            let level = receiver.outbox.level().clone();
            if let Some(sender) = self.registry.sessions.get(&from) {
                sender.flow.hold(&level);
            }
        }
        true
    }

    /// Whether `len` more bytes fanned out by the router may be queued for
    /// session `key`; if not, it is cut at once. Such a receiver may hold at most
    /// [`MEMORY_HARD_SHARES`] of the memory budget: the grace of [`SHARE_GRACE`]
    /// is for bursts of senders, each bounded by flow control, but one request
    /// fanned out inside the router (a publish to many subscriptions of one
    /// session, a subscribe to many retained values, interest changes) can queue
    /// more in one step than any reader could take.
    fn has_room(&mut self, key: SessionKey, len: usize) -> bool {
        let Some(session) = self.registry.sessions.get(&key) else {
            return false;
        };
        let held = session.outbox.held_bytes();
        let cap = self.config.budget.limit() / MEMORY_HARD_SHARES;
        if held == 0 || held + len <= cap {
            return true;
        }
        self.cut_slow(
            key,
            "frames for a client would pass half the memory budget at once: disconnecting it",
            format!(
                "more than half the bus's memory budget ({cap} bytes) would be waiting for you; queued messages were discarded"
            ),
        );
        false
    }

    /// Cuts receivers past high water that made no progress for the stall timeout:
    /// they hold their senders back, so they cannot wait for ever. While the memory
    /// budget is spent (every reader is held back) or a frame waits for room in it,
    /// any receiver with frames waiting that makes no progress is cut the same way.
    fn cut_stalled(&mut self) {
        let timeout = self.config.stall_timeout;
        let budget = &self.config.budget;
        // Pressed now, or someone waited for memory since the last check.
        let waits = budget.waits();
        let pressed = budget.pressed() || waits != self.budget_waits_seen;
        let spent = budget.spent();
        self.budget_waits_seen = waits;
        let share = budget.limit() / MEMORY_SHARES;
        let now = Instant::now();
        let (mut stalled, mut greedy) = (Vec::new(), Vec::new());
        for (&key, session) in &mut self.registry.sessions {
            let held = session.outbox.held_bytes();
            // Even a receiver that reads, slowly, may not keep more than its share
            // for long when others wait for memory (one that reads at full speed
            // drains it within the grace).
            if held > share {
                let since = *session.over_share.get_or_insert(now);
                if pressed && now.duration_since(since) >= timeout.min(SHARE_GRACE) {
                    greedy.push((key, held));
                    continue;
                }
            } else {
                session.over_share = None;
            }
            // Past high water it is cut only if that held someone back (an
            // `on_full: drop` subscriber or a monitor never does).
            let above = session.outbox.above_high();
            if !above {
                session.holding = false;
            }
            let holds_back = (above && session.holding) || (pressed && held > 0);
            if !holds_back {
                session.stuck = None;
                continue;
            }
            let progress = session.outbox.level().progress();
            // While the budget is spent every reader waits: one that takes
            // nothing at all gets the shorter grace.
            let limit = if spent {
                timeout.min(SHARE_GRACE)
            } else {
                timeout
            };
            match session.stuck {
                Some((seen, since)) if seen == progress => {
                    let idle = now.duration_since(since);
                    if idle > limit {
                        stalled.push((key, idle));
                    }
                }
                _ => session.stuck = Some((progress, now)),
            }
        }
        for (key, idle) in stalled {
            self.cut_slow(
                key,
                "client read nothing while messages waited for it and held their senders back: disconnecting it",
                format!(
                    "you read nothing for {:.1} s while messages waited for you; queued messages were discarded",
                    idle.as_secs_f64()
                ),
            );
        }
        for (key, held) in greedy {
            self.cut_slow(
                key,
                "client's queued messages held more than its share of the memory budget while others waited for memory: disconnecting it",
                format!(
                    "{held} bytes waited for you, more than your share ({share}) of the bus's memory budget, while others needed it; queued messages were discarded"
                ),
            );
        }
    }

    fn not_found(&mut self, from: SessionKey, msg: &Routed, to: &str, rid: Option<&Rid>) {
        self.counters.undeliverable += 1;
        let Some(sender) = self.registry.sessions.get(&from) else {
            return;
        };
        // hermes-bus tells anonymous senders only; registered ones opt in with `errors`.
        if sender.endpoint.is_none() || sender.features.errors() {
            let mut error = ProtocolError::new(
                ErrorCode::EndpointNotFound,
                format!("Endpoint '{to}' is not connected"),
            );
            error.id = Some(msg.id());
            self.answer(from, rid, error.to_frame());
        } else {
            debug!(
                to,
                "message to unknown endpoint from a registered sender dropped"
            );
        }
    }

    /// Pushes `frame` (a reply, an error, an ack) into a session's outbox; false if
    /// there is no such session or it is closing. A client that does not read its
    /// answers is held back like any sender: its requests are not read until it
    /// takes them.
    fn deliver(&mut self, key: SessionKey, frame: impl Into<OutFrame>) -> bool {
        let Some(session) = self.registry.sessions.get_mut(&key) else {
            return false;
        };
        self.answers += 1;
        if session.outbox.send(frame, self.round).is_err() {
            return false;
        }
        if session.outbox.above_high() {
            session.holding = true;
            session.flow.hold(session.outbox.level());
            if session.outbox.parked() > 0 {
                self.parked.insert(key);
            }
        }
        true
    }

    /// Handles one batch of a client's requests, in order, until answering them
    /// takes the client's own outbox past high water: the rest wait, with their
    /// slot (so their bytes stay counted), until the client reads. The answers to
    /// requests a client already sent are thus bounded like its messages are.
    fn requests(&mut self, key: SessionKey, mut requests: VecDeque<Request>, slot: Slot) {
        // Read at the first check, so a batch of a few messages reads no clock.
        let mut started: Option<Instant> = None;
        let mut cheap = 0u32;
        while let Some(request) = requests.pop_front() {
            let answers = self.answers;
            // Messages cost little; a publish walks part of the subscription table
            // and costs more per event it delivers; subscriptions and the like
            // may walk the whole table.
            let weight = match request.op {
                Op::Message(_) | Op::Ping => 1,
                Op::Publish(_) => PUBLISH_WEIGHT,
                _ => ROUTER_CHECK_EVERY,
            };
            let events = self.counters.events_delivered;
            let appends = self.appends.len();
            self.request(key, request);
            if requests.is_empty() {
                return;
            }
            let delivered = self.counters.events_delivered.wrapping_sub(events);
            cheap = cheap
                .saturating_add(weight)
                .saturating_add(u32::try_from(delivered).unwrap_or(u32::MAX));
            // A publish a stream keeps, while the store is behind: the rest wait.
            let store_wait = self.appends.len() > appends && self.store_behind(false);
            let used_up = store_wait
                || cheap >= ROUTER_CHECK_EVERY && {
                    cheap = 0;
                    started.get_or_insert_with(Instant::now).elapsed() > ROUTER_SLICE
                };
            // Only an answer can fill the client's own outbox.
            if !used_up && self.answers == answers {
                continue;
            }
            let Some(session) = self.registry.sessions.get_mut(&key) else {
                return;
            };
            if used_up || session.outbox.above_high() {
                if store_wait {
                    session.store_wait = true;
                    self.counters.store_waits += 1;
                }
                // First in line: it may come from the queue (resumed), and
                // the client's later batches wait behind it.
                session.deferred.push_front((requests, slot));
                self.deferring.insert(key);
                return;
            }
        }
    }

    /// Goes on with the deferred requests of clients that read their answers,
    /// or whose last slice of router time is over: a slice each per tick, so
    /// other clients' requests come in between.
    fn resume_deferred(&mut self) {
        let keys: Vec<SessionKey> = self.deferring.iter().copied().collect();
        for key in keys {
            let started = Instant::now();
            loop {
                let store_behind = self.store_behind(true);
                let Some(session) = self.registry.sessions.get_mut(&key) else {
                    self.deferring.remove(&key);
                    break;
                };
                if session.store_wait {
                    if store_behind {
                        break;
                    }
                    session.store_wait = false;
                }
                // A client that left is not waited for.
                if session.outbox.above_high() && !session.closing {
                    break;
                }
                let Some((requests, slot)) = session.deferred.pop_front() else {
                    self.deferring.remove(&key);
                    if session.closing {
                        self.close(key, Close::Flush);
                    }
                    break;
                };
                self.requests(key, requests, slot);
                // Its slice is used: the others' turn.
                if started.elapsed() > ROUTER_SLICE {
                    break;
                }
            }
        }
    }

    /// Moves parked frames on into outboxes that have room again.
    fn unpark(&mut self) {
        let sessions = &mut self.registry.sessions;
        self.parked.retain(|key| {
            sessions
                .get_mut(key)
                .is_some_and(|s| s.outbox.unpark() == Ok(false))
        });
    }

    /// Disconnects a slow consumer: counted, logged (`why`), told (`detail`).
    fn cut_slow(&mut self, key: SessionKey, why: &str, detail: String) {
        let Some(session) = self.registry.sessions.get(&key) else {
            return;
        };
        self.counters.slow_consumer_disconnects += 1;
        warn!(
            endpoint = session.endpoint.as_deref().unwrap_or("(anonymous)"),
            session_id = %session.id,
            "{why}"
        );
        let frame = ProtocolError::new(ErrorCode::SlowConsumer, detail).to_frame();
        self.close(key, Close::Abort(frame));
    }

    fn close(&mut self, key: SessionKey, how: Close) {
        let Some(mut session) = self.registry.remove(key) else {
            return;
        };
        self.parked.remove(&key);
        self.deferring.remove(&key);
        self.gapping.remove(&key);
        if session.monitor.is_some() {
            self.monitors.retain(|&k| k != key);
        }
        self.topics_session_ended(key, &mut session);
        self.rpc_session_ended(key, &session);
        self.kv_session_ended(key);
        self.store_session_ended(key);
        debug!(
            key,
            endpoint = session.endpoint.as_deref().unwrap_or("(anonymous)"),
            "session closed"
        );
        let discarded = match how {
            Close::Flush => session.outbox.finish(None),
            Close::FlushWith(frame) => session.outbox.finish(Some(frame)),
            Close::Abort(frame) => {
                session.outbox.abort(frame);
                0
            }
        };
        if discarded > 0 {
            warn!(
                endpoint = session.endpoint.as_deref().unwrap_or("(anonymous)"),
                discarded,
                "session closed with messages still waiting for room in its outbox: not delivered"
            );
        }
    }

    /// Closes sessions silent (no request at all) for longer than the heartbeat
    /// timeout: registered ones, and anonymous ones, which would otherwise hold a
    /// connection and its buffers for ever.
    fn expire(&mut self, now: Instant) {
        let timeout = self.config.heartbeat_timeout;
        let dead: Vec<SessionKey> = self
            .registry
            .sessions
            .iter()
            .filter(|(_, s)| now.duration_since(s.last_seen) > timeout)
            .map(|(&k, _)| k)
            .collect();
        for key in dead {
            self.counters.heartbeat_timeouts += 1;
            let anonymous = self
                .registry
                .sessions
                .get(&key)
                .is_some_and(|s| s.endpoint.is_none());
            if let Some(s) = self.registry.sessions.get(&key) {
                info!(
                    endpoint = s.endpoint.as_deref().unwrap_or("(anonymous)"),
                    "heartbeat timeout: closing session"
                );
            }
            let detail = if anonymous {
                format!(
                    "anonymous connection silent for {} s",
                    timeout.as_secs_f64()
                )
            } else {
                format!("no ping or message for {} s", timeout.as_secs_f64())
            };
            let frame = ProtocolError::new(ErrorCode::HeartbeatTimeout, detail).to_frame();
            self.close(key, Close::FlushWith(frame));
        }
    }

    fn status_frame(&self) -> Bytes {
        let endpoints = self.registry.endpoint_ids();
        crate::frame::encode_json(&serde_json::json!({
            "type": "status",
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": protocol::PROTOCOL_VERSION,
            "pid": std::process::id(),
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "socket": self.config.socket_path,
            "connections": self.registry.sessions.len(),
            "sessions": self.registry.sessions.values().map(|s| serde_json::json!({
                "id": s.id,
                "endpoint": s.endpoint,
                "uid": s.peer.uid,
                "gid": s.peer.gid,
                "pid": s.peer.pid,
                "exe": s.peer.exe,
            })).collect::<Vec<_>>(),
            "endpoints": endpoints,
            "counters": self.counters,
            "topics": {
                "subscriptions": self.registry.subscriptions.len(),
                "retained": self.retained.len(),
                "interests": self.interests.len(),
                "pending_requests": self.asks.len(),
                "monitors": self.monitors.len(),
            },
            "store": self.store.as_ref().map(|s| s.health.report()),
            "kv": {
                "keys": self.kv.len(),
                "watches": self.kv.watches(),
            },
            "memory": {
                "budget": self.config.budget.limit(),
                "used": self.config.budget.used(),
                "waits": self.config.budget.waits(),
            },
        }))
    }
}
