//! Who is on the bus: sessions by key and endpoint names, with the rules that
//! tie them together (one name per session, a newer registration takes a name
//! over, a closing session frees only a name it still owns). Pure state, no I/O:
//! the router actor ([`super::Router`]) decides what to tell whom. It also owns
//! the subscription table, kept in step with each session's own list.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::subscriptions::{Sub, Subscriptions};
use crate::flow::{Flow, Slot};
use crate::outbox::Outbox;
use crate::peer::Peer;
use crate::protocol::{Features, MonitorFilter, Request, Subscribe, Will};

/// Most subscriptions one session may have.
pub const MAX_SESSION_SUBSCRIPTIONS: usize = 65_536;

/// Most subscriptions on the bus.
pub const MAX_SUBSCRIPTIONS: usize = 1_000_000;

/// A session's subscription, as the session keeps it.
#[derive(Debug, Clone)]
pub(crate) struct SubInfo {
    pub pattern: Box<str>,
    pub queue: Option<Arc<str>>,
}

/// A session's monitor.
#[derive(Debug, Clone)]
pub(crate) struct Monitor {
    pub sid: u64,
    pub filter: MonitorFilter,
}

/// Identifies a connection inside the daemon.
pub type SessionKey = u64;

/// One connection, as the router sees it.
pub(crate) struct Session {
    pub id: String,
    pub peer: Peer,
    pub endpoint: Option<String>,
    pub outbox: Outbox,
    pub flow: Arc<Flow>,
    /// While the outbox is past high water: the writer's progress count when that
    /// was first seen unchanged, and since when.
    pub stuck: Option<(u64, Instant)>,
    /// Since when it holds more than its share of a pressed memory budget.
    pub over_share: Option<Instant>,
    /// Its outbox, past high water, held a sender (or the session itself, for
    /// answers) back since it was last below: what makes a stalled reader cut.
    pub holding: bool,
    /// Requests waiting for the client to read its answers, for the router's
    /// next slice, or for the store to commit the stream appends before them,
    /// with their slots.
    pub deferred: VecDeque<(VecDeque<Request>, Slot)>,
    /// Its deferred requests wait for the store's append backlog to go down.
    pub store_wait: bool,
    /// Its reader stopped: it closes once its deferred requests are handled.
    pub closing: bool,
    pub last_seen: Instant,
    pub features: Features,
    /// The client sent `hello`: it speaks hookbus's extensions, so it may be sent
    /// frames a hermes-bus 0.7 client would hand to its application as messages.
    pub negotiated: bool,
    /// Subscriptions by `sid` (in the registry's table too).
    pub subs: HashMap<u64, SubInfo>,
    /// Subscriptions (and the monitor) that skipped events, and how many, for
    /// the `gap` frame the subscriber gets once it has room.
    pub missed: HashMap<u64, u64>,
    /// The last `sid` (or `iid`) handed out.
    pub last_sid: u64,
    pub monitor: Option<Monitor>,
    /// Published for the session when it ends without `bye`.
    pub will: Option<Will>,
    /// Requests it sent that wait for responses (their `reply_to` tokens).
    pub asked: HashSet<u64>,
    /// Requests it was sent and has not answered (their `reply_to` tokens).
    pub serving: HashSet<u64>,
}

impl Session {
    pub fn new(peer: Peer, outbox: Outbox, flow: Arc<Flow>) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            peer,
            endpoint: None,
            outbox,
            flow,
            stuck: None,
            over_share: None,
            holding: false,
            deferred: VecDeque::new(),
            store_wait: false,
            closing: false,
            last_seen: Instant::now(),
            features: Features::default(),
            negotiated: false,
            subs: HashMap::new(),
            missed: HashMap::new(),
            last_sid: 0,
            monitor: None,
            will: None,
            asked: HashSet::new(),
            serving: HashSet::new(),
        }
    }

    /// A new `sid` (or `iid`) for this session.
    pub fn next_sid(&mut self) -> u64 {
        self.last_sid += 1;
        self.last_sid
    }

    /// The endpoint name, as `from` in frames the bus builds.
    pub fn from(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }
}

/// Why a subscription was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SubscribeError {
    NoSession,
    SessionFull,
    BusFull,
}

/// What a `register` did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Registration {
    /// The name is this session's.
    Registered,
    /// The session already has a name (this one).
    AlreadyAs(String),
    /// The name is this session's, taken from this other session, which keeps
    /// running without it (the router closes it).
    TookOver(SessionKey),
}

/// Sessions and endpoint names.
#[derive(Default)]
pub(crate) struct Registry {
    /// Every session, looked up several times per message.
    pub sessions: HashMap<SessionKey, Session, KeyHash>,
    endpoints: HashMap<String, SessionKey>,
    /// Every subscription, by pattern.
    pub subscriptions: Subscriptions,
    /// Subscriptions of closed sessions still in the table, taken out a few at a
    /// time ([`Registry::reap`]) so closing a session with many costs the router
    /// no long pause. Keys are never reused, so matching skips them meanwhile.
    graveyard: Vec<(Box<str>, SessionKey, u64)>,
}

/// Subscriptions of closed sessions taken out of the table per [`Registry::reap`].
pub const REAP_BATCH: usize = 4096;

impl Registry {
    pub fn open(&mut self, key: SessionKey, session: Session) {
        self.sessions.insert(key, session);
    }

    /// Takes a session out; its endpoint name is freed if it still owns it, and
    /// its subscriptions leave the table (the session still lists them).
    pub fn remove(&mut self, key: SessionKey) -> Option<Session> {
        let session = self.sessions.remove(&key)?;
        if let Some(name) = &session.endpoint {
            if self.endpoints.get(name) == Some(&key) {
                self.endpoints.remove(name);
            }
        }
        self.graveyard.extend(
            session
                .subs
                .iter()
                .map(|(&sid, sub)| (sub.pattern.clone(), key, sid)),
        );
        self.reap();
        Some(session)
    }

    /// Takes up to [`REAP_BATCH`] subscriptions of closed sessions out of the
    /// table; true while some are left.
    pub fn reap(&mut self) -> bool {
        let from = self.graveyard.len().saturating_sub(REAP_BATCH);
        for (pattern, key, sid) in self.graveyard.drain(from..) {
            self.subscriptions.remove(&pattern, key, sid);
        }
        !self.graveyard.is_empty()
    }

    /// Subscriptions of closed sessions not yet taken out.
    pub fn reaping(&self) -> bool {
        !self.graveyard.is_empty()
    }

    /// Adds a subscription for session `key`; its new `sid`.
    pub fn subscribe(&mut self, key: SessionKey, sub: Subscribe) -> Result<u64, SubscribeError> {
        let session = self
            .sessions
            .get_mut(&key)
            .ok_or(SubscribeError::NoSession)?;
        if session.subs.len() >= MAX_SESSION_SUBSCRIPTIONS {
            return Err(SubscribeError::SessionFull);
        }
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return Err(SubscribeError::BusFull);
        }
        let sid = session.next_sid();
        self.subscriptions.insert(
            &sub.pattern,
            Sub {
                key,
                sid,
                queue: sub.queue.clone(),
                on_full: sub.on_full,
            },
        );
        session.subs.insert(
            sid,
            SubInfo {
                pattern: sub.pattern,
                queue: sub.queue,
            },
        );
        Ok(sid)
    }

    /// Ends subscription `sid` of session `key`.
    pub fn unsubscribe(&mut self, key: SessionKey, sid: u64) -> Option<SubInfo> {
        let session = self.sessions.get_mut(&key)?;
        let info = session.subs.remove(&sid)?;
        session.missed.remove(&sid);
        self.subscriptions.remove(&info.pattern, key, sid);
        Some(info)
    }

    /// Gives `name` to session `key`; `None` if there is no such session.
    pub fn register(&mut self, key: SessionKey, name: &str) -> Option<Registration> {
        let session = self.sessions.get_mut(&key)?;
        if let Some(current) = &session.endpoint {
            return Some(Registration::AlreadyAs(current.clone()));
        }
        session.endpoint = Some(name.to_owned());
        Some(match self.endpoints.insert(name.to_owned(), key) {
            Some(old) if old != key => Registration::TookOver(old),
            _ => Registration::Registered,
        })
    }

    /// The session registered as `name`.
    pub fn endpoint(&self, name: &str) -> Option<SessionKey> {
        self.endpoints.get(name).copied()
    }

    /// Endpoint name → session id, as `endpoints_list` and `status` report them.
    pub fn endpoint_ids(&self) -> HashMap<&str, &str> {
        self.endpoints
            .iter()
            .filter_map(|(name, k)| Some((name.as_str(), self.sessions.get(k)?.id.as_str())))
            .collect()
    }
}

/// Hashes session keys for the registry's map, which the router looks up several
/// times per message. Keys are numbers the server hands out in sequence, not
/// chosen by clients, so a multiplicative hash (Fibonacci hashing) spreads them
/// well and needs none of SipHash's protection against chosen keys.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KeyHash;

impl std::hash::BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

#[derive(Debug, Default)]
pub(crate) struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, key: u64) {
        self.0 = (self.0 ^ key).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Budget;

    fn session() -> Session {
        let (outbox, _rx) = crate::outbox::outbox(8, 1024, Budget::new(1 << 20), None);
        let peer = Peer {
            uid: 1000,
            gid: 1000,
            pid: Some(42),
            exe: None,
        };
        Session::new(peer, outbox, Arc::new(Flow::default()))
    }

    fn registry(keys: &[SessionKey]) -> Registry {
        let mut r = Registry::default();
        for &k in keys {
            r.open(k, session());
        }
        r
    }

    #[test]
    fn one_name_per_session() {
        let mut r = registry(&[1]);
        assert_eq!(r.register(1, "a"), Some(Registration::Registered));
        assert_eq!(
            r.register(1, "b"),
            Some(Registration::AlreadyAs("a".into()))
        );
        assert_eq!(r.endpoint("a"), Some(1));
        assert_eq!(r.endpoint("b"), None);
        assert_eq!(r.register(9, "c"), None, "no such session");
    }

    #[test]
    fn a_newer_registration_takes_the_name_and_the_old_session_cannot_free_it() {
        let mut r = registry(&[1, 2]);
        r.register(1, "a");
        assert_eq!(r.register(2, "a"), Some(Registration::TookOver(1)));
        assert_eq!(r.endpoint("a"), Some(2));
        // The old session closes after the takeover: the name stays with the new one.
        assert!(r.remove(1).is_some());
        assert_eq!(r.endpoint("a"), Some(2));
        let ids = r.endpoint_ids();
        assert_eq!(ids.get("a"), Some(&r.sessions[&2].id.as_str()));
        // The owner closing frees it.
        r.remove(2);
        assert_eq!(r.endpoint("a"), None);
        assert!(r.endpoint_ids().is_empty());
    }

    fn subscribe(pattern: &str) -> Subscribe {
        Subscribe {
            pattern: pattern.into(),
            queue: None,
            on_full: crate::protocol::OnFull::Pause,
        }
    }

    #[test]
    fn subscriptions_follow_their_session() {
        let mut r = registry(&[1, 2]);
        let a = r.subscribe(1, subscribe("a.*")).unwrap();
        let b = r.subscribe(1, subscribe("a.>")).unwrap();
        let c = r.subscribe(2, subscribe("a.b")).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            r.subscribe(9, subscribe("a")),
            Err(SubscribeError::NoSession)
        );
        let mut out = Vec::new();
        r.subscriptions.matching("a.b", &mut out);
        assert_eq!(out.len(), 3);
        drop(out);
        assert!(r.unsubscribe(1, a).is_some());
        assert!(r.unsubscribe(1, a).is_none(), "only once");
        assert!(r.unsubscribe(2, b).is_none(), "not another session's");
        let gone = r.remove(1).unwrap();
        assert_eq!(
            gone.subs.len(),
            1,
            "the closed session still lists what it had"
        );
        let mut out = Vec::new();
        r.subscriptions.matching("a.b", &mut out);
        assert_eq!(
            out.iter().map(|s| (s.key, s.sid)).collect::<Vec<_>>(),
            vec![(2, c)]
        );
    }

    #[test]
    fn a_session_has_a_bounded_number_of_subscriptions() {
        let mut r = registry(&[1]);
        for _ in 0..MAX_SESSION_SUBSCRIPTIONS {
            r.subscribe(1, subscribe("x")).unwrap();
        }
        assert_eq!(
            r.subscribe(1, subscribe("x")),
            Err(SubscribeError::SessionFull)
        );
        r.remove(1);
        assert!(r.reaping(), "taken out a batch at a time");
        while r.reap() {}
        assert!(r.subscriptions.is_empty());
    }

    #[test]
    fn key_hash_spreads_sequential_keys() {
        use std::hash::BuildHasher;
        let buckets: std::collections::HashSet<u64> =
            (1..=1024u64).map(|k| KeyHash.hash_one(k) >> 54).collect();
        assert!(
            buckets.len() > 600,
            "{} of 1024 top-10-bit buckets",
            buckets.len()
        );
    }
}
