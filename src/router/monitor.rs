//! The router's side of feature `monitor`: a copy of every routed frame to the
//! sessions that asked, never holding anyone back (a monitor that falls behind
//! misses frames and is told with a `gap`).

use bytes::Bytes;
use serde_json::json;

use super::registry::{Monitor, SessionKey};
use super::Router;
use crate::protocol::monitor::{monitored, Seen};
use crate::protocol::{ErrorCode, MonitorFilter, MonitorKind, ProtocolError, Rid};

impl Router {
    pub(super) fn start_monitor(
        &mut self,
        key: SessionKey,
        rid: Option<&Rid>,
        filter: MonitorFilter,
    ) {
        let owner = nix::unistd::geteuid().as_raw();
        let Some(session) = self.registry.sessions.get_mut(&key) else {
            return;
        };
        if session.peer.uid != owner {
            let detail = format!("only the bus owner (uid {owner}) may monitor it");
            self.answer(
                key,
                rid,
                ProtocolError::new(ErrorCode::PermissionDenied, detail).to_frame(),
            );
            return;
        }
        let sid = match &mut session.monitor {
            Some(m) => {
                m.filter = filter;
                m.sid
            }
            None => {
                let sid = session.next_sid();
                session.monitor = Some(Monitor { sid, filter });
                self.monitors.push(key);
                sid
            }
        };
        let reply = crate::frame::encode_json(&json!({"type": "monitoring", "sid": sid}));
        self.answer(key, rid, reply);
    }

    /// Copies one routed frame (its JSON text in `frame`, header included) to
    /// every monitor whose filter takes it.
    pub(super) fn monitor_frame(
        &mut self,
        from: SessionKey,
        kind: MonitorKind,
        subject: Option<&str>,
        frame: &Bytes,
        hook: Option<(&str, &str)>,
    ) {
        if self.monitors.is_empty() {
            return;
        }
        let (session_id, from_name) = match self.registry.sessions.get(&from) {
            Some(s) => (s.id.clone(), s.endpoint.clone()),
            None => (String::new(), None),
        };
        let seen = Seen {
            kind,
            session: &session_id,
            from: from_name.as_deref(),
            subject,
            frame: crate::frame::payload(frame),
            hook,
        };
        let max = self.config.max_frame_len;
        for &key in &self.monitors {
            let Some(session) = self.registry.sessions.get_mut(&key) else {
                continue;
            };
            let Some(m) = &session.monitor else { continue };
            if !m.filter.wants(kind, subject) {
                continue;
            }
            let sid = m.sid;
            if session.outbox.above_high() {
                *session.missed.entry(sid).or_insert(0) += 1;
                self.counters.monitor_dropped += 1;
                self.gapping.insert(key);
                continue;
            }
            if let Some(missed) = session.missed.remove(&sid) {
                let _ = session
                    .outbox
                    .push(crate::protocol::subscribe::gap(sid, missed));
            }
            let _ = session.outbox.push(monitored(sid, &seen, max));
        }
    }
}
