//! Who is on the bus: sessions by key and endpoint names, with the rules that
//! tie them together (one name per session, a newer registration takes a name
//! over, a closing session frees only a name it still owns). Pure state, no I/O:
//! the router actor ([`super::Router`]) decides what to tell whom.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::flow::{Flow, Slot};
use crate::outbox::Outbox;
use crate::peer::Peer;
use crate::protocol::{Features, Request};

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
    /// Requests waiting for the client to read its answers, with their slots.
    pub deferred: VecDeque<(VecDeque<Request>, Slot)>,
    pub last_seen: Instant,
    pub features: Features,
    /// The client sent `hello`: it speaks hookbus's extensions, so it may be sent
    /// frames a hermes-bus 0.7 client would hand to its application as messages.
    pub negotiated: bool,
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
            deferred: VecDeque::new(),
            last_seen: Instant::now(),
            features: Features::default(),
            negotiated: false,
        }
    }
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
}

impl Registry {
    pub fn open(&mut self, key: SessionKey, session: Session) {
        self.sessions.insert(key, session);
    }

    /// Takes a session out; its endpoint name is freed if it still owns it.
    pub fn remove(&mut self, key: SessionKey) -> Option<Session> {
        let session = self.sessions.remove(&key)?;
        if let Some(name) = &session.endpoint {
            if self.endpoints.get(name) == Some(&key) {
                self.endpoints.remove(name);
            }
        }
        Some(session)
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
        let (outbox, _rx) = crate::outbox::outbox(8, 1024, Budget::new(1 << 20));
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
