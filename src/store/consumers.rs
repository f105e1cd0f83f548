//! Durable consumers of streams: a named cursor per stream that survives
//! client and daemon restarts. The store delivers a consumer's messages to the
//! one connection consuming it, keeps each delivered message pending until it
//! is acknowledged, and delivers it again when its ack wait ends, when it is
//! `nak`ed, or when its connection goes, up to `max_deliver` times.
//!
//! In the tables: each consumer's settings and `next_seq` (the first message
//! never delivered), and each pending message with its delivery count. In
//! memory, besides: who consumes it, each pending message's deadline, and
//! whether the router asked for more (deliveries go out a chunk at a time, the
//! next once the client has room, like a replay's).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use rusqlite::{params, Connection, Transaction};

use super::streams::{Stored, Streams, CHUNK, CHUNK_BYTES, SELECT_STORED};
use super::{Answer, Done};
use crate::protocol::streams::{self as wire, AckOp, Consume, ConsumerInfo};
use crate::protocol::{ErrorCode, ProtocolError};
use crate::router::SessionKey;

/// Most durable consumers the bus keeps.
pub const MAX_CONSUMERS: usize = 1000;

/// Most stored messages one look at a consumer reads past its subject filter.
const SCAN: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
struct Settings {
    filter: Option<Box<str>>,
    ack_wait_ms: u64,
    max_deliver: u32,
    max_ack_pending: u32,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    deliveries: u32,
    /// Out: when its ack wait ends. Not out: when to deliver it again.
    due_ms: u64,
    /// Delivered and waiting for an ack.
    out: bool,
}

#[derive(Debug)]
struct Consumer {
    settings: Settings,
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
    bound: Option<SessionKey>,
    /// Frames went out; no more until the router says the client has room.
    paused: bool,
    /// `next_seq` changed in the open transaction.
    dirty: bool,
    /// Nothing pending needs a look before this.
    next_due: u64,
    dead: u64,
    trimmed: u64,
}

impl Consumer {
    fn new(settings: Settings, next_seq: u64) -> Self {
        Consumer {
            settings,
            next_seq,
            pending: BTreeMap::new(),
            bound: None,
            paused: false,
            dirty: false,
            next_due: 0,
            dead: 0,
            trimmed: 0,
        }
    }

    fn has_new(&self, last_seq: u64) -> bool {
        self.next_seq <= last_seq && self.pending.len() < self.settings.max_ack_pending as usize
    }

    /// While paused only ack waits matter; the rest waits for the resume.
    fn refresh_due(&mut self) {
        let paused = self.paused;
        self.next_due = self
            .pending
            .values()
            .filter(|p| p.out || !paused)
            .map(|p| p.due_ms)
            .min()
            .unwrap_or(u64::MAX);
    }

    /// Messages trimmed before it got them are skipped, and counted.
    fn skip_trimmed(&mut self, first_seq: u64) {
        if self.next_seq < first_seq {
            self.trimmed += first_seq - self.next_seq;
            self.next_seq = first_seq;
            self.dirty = true;
        }
    }

    /// Its connection went: what it had out is delivered again to the next.
    fn release(&mut self, now: u64) {
        self.bound = None;
        self.paused = false;
        for p in self.pending.values_mut().filter(|p| p.out) {
            p.out = false;
            p.due_ms = now;
        }
    }

    fn info<'a>(&'a self, stream: &'a str, durable: &'a str) -> ConsumerInfo<'a> {
        ConsumerInfo {
            stream,
            durable,
            subject: self.settings.filter.as_deref(),
            next_seq: self.next_seq,
            pending: self.pending.len(),
            consuming: self.bound.is_some(),
            ack_wait_ms: self.settings.ack_wait_ms,
            max_deliver: self.settings.max_deliver,
            max_ack_pending: self.settings.max_ack_pending,
            dead: self.dead,
            trimmed: self.trimmed,
        }
    }
}

/// A consumer's frames for its connection. The router asks for the next
/// ones ([`super::StoreOp::ConsumeNext`]) once the client has room.
#[derive(Debug)]
pub struct Deliveries {
    pub stream: Arc<str>,
    pub durable: Arc<str>,
    pub frames: Vec<Bytes>,
}

#[derive(Debug, Default)]
pub struct Consumers {
    by_stream: HashMap<Arc<str>, HashMap<Arc<str>, Consumer>>,
}

fn refuse(code: ErrorCode, detail: String) -> Bytes {
    ProtocolError::new(code, detail).to_frame()
}

fn no_consumer(stream: &str, durable: &str) -> Bytes {
    refuse(
        ErrorCode::NotFound,
        format!("no durable consumer `{durable}` on stream `{stream}`"),
    )
}

fn busy(stream: &str, durable: &str) -> Bytes {
    refuse(
        ErrorCode::ConsumerBusy,
        format!("durable `{durable}` of stream `{stream}` is consumed by another connection; it is free once that one closes or sends `unconsume`"),
    )
}

impl Consumers {
    /// The consumers of declared streams, none consumed, what they had out
    /// to be delivered again.
    pub fn load(conn: &Connection, streams: &Streams) -> rusqlite::Result<Self> {
        let mut consumers = Consumers::default();
        let mut stmt = conn.prepare(
            "SELECT stream, name, filter, ack_wait_ms, max_deliver, max_ack_pending, next_seq FROM stream_consumers",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let stream: String = r.get(0)?;
            if streams.bounds(&stream).is_none() {
                continue; // no longer declared: kept on disk, not served
            }
            let name: String = r.get(1)?;
            let settings = Settings {
                filter: r.get::<_, Option<String>>(2)?.map(Into::into),
                ack_wait_ms: r.get::<_, i64>(3)? as u64,
                max_deliver: r.get(4)?,
                max_ack_pending: r.get(5)?,
            };
            let next_seq = r.get::<_, i64>(6)? as u64;
            consumers
                .by_stream
                .entry(stream.into())
                .or_default()
                .insert(name.into(), Consumer::new(settings, next_seq));
        }
        let mut stmt =
            conn.prepare("SELECT stream, name, seq, deliveries FROM consumer_pending")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (stream, name): (String, String) = (r.get(0)?, r.get(1)?);
            if let Some(c) = consumers
                .by_stream
                .get_mut(stream.as_str())
                .and_then(|s| s.get_mut(name.as_str()))
            {
                let pending = Pending {
                    deliveries: r.get(3)?,
                    due_ms: 0,
                    out: false,
                };
                c.pending.insert(r.get::<_, i64>(2)? as u64, pending);
            }
        }
        Ok(consumers)
    }

    /// After a failed commit: the tables' state, each consumer still bound
    /// to its connection (what it had out is delivered again).
    pub fn reload(&mut self, conn: &Connection, streams: &Streams) -> rusqlite::Result<()> {
        let mut fresh = Consumers::load(conn, streams)?;
        for (stream, consumers) in &self.by_stream {
            for (name, c) in consumers {
                if let Some(f) = fresh
                    .by_stream
                    .get_mut(stream)
                    .and_then(|s| s.get_mut(name))
                {
                    f.bound = c.bound;
                }
            }
        }
        *self = fresh;
        Ok(())
    }

    fn get_mut(&mut self, stream: &str, durable: &str) -> Option<&mut Consumer> {
        self.by_stream.get_mut(stream)?.get_mut(durable)
    }

    /// `consume`: creates the consumer or takes the existing one, and binds
    /// it to `session`. Answers `consuming`.
    pub fn consume(
        &mut self,
        tx: &Transaction,
        streams: &Streams,
        session: SessionKey,
        c: Consume,
        now: u64,
    ) -> rusqlite::Result<Bytes> {
        let (stream, durable) = (&*c.stream, &*c.durable);
        let Some((first_seq, _)) = streams.bounds(stream) else {
            return Ok(refuse(
                ErrorCode::NotFound,
                format!("no stream `{stream}`; `hookbus stream ls` lists them"),
            ));
        };
        if let Some(existing) = self.get_mut(stream, durable) {
            if existing.bound.is_some_and(|b| b != session) {
                return Ok(busy(stream, durable));
            }
            if existing.settings.filter != c.subject {
                let was = existing.settings.filter.as_deref().unwrap_or("(none)");
                return Ok(refuse(
                    ErrorCode::BadRequest,
                    format!("durable `{durable}` of stream `{stream}` was created with subject filter {was}; delete it (`consumer_delete`) to change it"),
                ));
            }
            let s = &mut existing.settings;
            let before = s.clone();
            s.ack_wait_ms = c.ack_wait_ms.unwrap_or(s.ack_wait_ms);
            s.max_deliver = c.max_deliver.unwrap_or(s.max_deliver);
            s.max_ack_pending = c.max_ack_pending.unwrap_or(s.max_ack_pending);
            if *s != before {
                tx.prepare_cached(
                    "UPDATE stream_consumers SET ack_wait_ms = ?3, max_deliver = ?4, max_ack_pending = ?5
                     WHERE stream = ?1 AND name = ?2",
                )?
                .execute(params![
                    stream,
                    durable,
                    s.ack_wait_ms as i64,
                    s.max_deliver,
                    s.max_ack_pending
                ])?;
            }
            if existing.bound.is_none() {
                existing.bound = Some(session);
                existing.paused = false;
            }
            existing.next_due = 0;
            // The answer tells where it really is.
            existing.skip_trimmed(first_seq);
            return Ok(wire::consuming(&existing.info(stream, durable), false));
        }
        // Counted on disk: consumers of streams no longer declared count too.
        let kept: i64 = tx.query_row("SELECT COUNT(*) FROM stream_consumers", [], |r| r.get(0))?;
        if kept as usize >= MAX_CONSUMERS {
            return Ok(refuse(
                ErrorCode::BadRequest,
                format!("the bus keeps {MAX_CONSUMERS} durable consumers, the most it may; delete one with `consumer_delete`"),
            ));
        }
        let start = match streams.start_seq(tx, stream, c.from)? {
            Ok(start) => start,
            Err(refused) => return Ok(refused),
        };
        let settings = Settings {
            filter: c.subject,
            ack_wait_ms: c.ack_wait_ms.unwrap_or(wire::ACK_WAIT_DEFAULT_MS),
            max_deliver: c.max_deliver.unwrap_or(wire::MAX_DELIVER_DEFAULT),
            max_ack_pending: c.max_ack_pending.unwrap_or(wire::MAX_ACK_PENDING_DEFAULT),
        };
        tx.prepare_cached(
            "INSERT INTO stream_consumers (stream, name, filter, ack_wait_ms, max_deliver, max_ack_pending, next_seq, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            stream,
            durable,
            settings.filter.as_deref(),
            settings.ack_wait_ms as i64,
            settings.max_deliver,
            settings.max_ack_pending,
            start as i64,
            now as i64
        ])?;
        let mut consumer = Consumer::new(settings, start);
        consumer.bound = Some(session);
        let answer = wire::consuming(&consumer.info(stream, durable), true);
        self.by_stream
            .entry(stream.into())
            .or_default()
            .insert(durable.into(), consumer);
        Ok(answer)
    }

    /// `stream_ack`. Answers `stream_acked`.
    #[allow(clippy::too_many_arguments)]
    pub fn ack(
        &mut self,
        tx: &Transaction,
        stream: &str,
        durable: &str,
        seq: u64,
        op: AckOp,
        delay_ms: u64,
        now: u64,
    ) -> rusqlite::Result<Bytes> {
        let Some(c) = self.get_mut(stream, durable) else {
            return Ok(no_consumer(stream, durable));
        };
        let Some(p) = c.pending.get_mut(&seq) else {
            return Ok(refuse(
                ErrorCode::NotFound,
                format!("seq {seq} is not waiting for an ack from durable `{durable}` of stream `{stream}`: acknowledged already, not delivered yet, or given up"),
            ));
        };
        match op {
            AckOp::Ack | AckOp::Term => {
                c.pending.remove(&seq);
                delete_pending(tx, stream, durable, seq)?;
            }
            AckOp::Nak => {
                p.out = false;
                p.due_ms = now.saturating_add(delay_ms);
                c.next_due = c.next_due.min(p.due_ms);
            }
            AckOp::Progress => {
                if p.out {
                    p.due_ms = now + c.settings.ack_wait_ms;
                }
            }
        }
        Ok(wire::acked(stream, durable, seq, op))
    }

    /// `unconsume`: `session` stops consuming.
    pub fn unconsume(
        &mut self,
        session: SessionKey,
        stream: &str,
        durable: &str,
        now: u64,
    ) -> Bytes {
        match self.get_mut(stream, durable) {
            Some(c) if c.bound == Some(session) => {
                c.release(now);
                wire::consumer_done("unconsumed", stream, durable)
            }
            _ => refuse(
                ErrorCode::NotFound,
                format!(
                    "this connection does not consume durable `{durable}` of stream `{stream}`"
                ),
            ),
        }
    }

    /// `consumer_delete`: forgets the consumer and its pending messages.
    pub fn delete(
        &mut self,
        tx: &Transaction,
        session: SessionKey,
        stream: &str,
        durable: &str,
    ) -> rusqlite::Result<Bytes> {
        let Some(c) = self.get_mut(stream, durable) else {
            return Ok(no_consumer(stream, durable));
        };
        if c.bound.is_some_and(|b| b != session) {
            return Ok(busy(stream, durable));
        }
        if let Some(s) = self.by_stream.get_mut(stream) {
            s.remove(durable);
        }
        tx.prepare_cached("DELETE FROM stream_consumers WHERE stream = ?1 AND name = ?2")?
            .execute(params![stream, durable])?;
        tx.prepare_cached("DELETE FROM consumer_pending WHERE stream = ?1 AND name = ?2")?
            .execute(params![stream, durable])?;
        Ok(wire::consumer_done("consumer_deleted", stream, durable))
    }

    /// The router has room for more of this consumer's messages.
    pub fn resume(&mut self, session: SessionKey, stream: &str, durable: &str) {
        if let Some(c) = self.get_mut(stream, durable) {
            if c.bound == Some(session) {
                c.paused = false;
                c.next_due = 0;
            }
        }
    }

    pub fn session_closed(&mut self, session: SessionKey, now: u64) {
        for c in self.by_stream.values_mut().flat_map(HashMap::values_mut) {
            if c.bound == Some(session) {
                c.release(now);
            }
        }
    }

    /// A stream's consumers, by name.
    pub fn infos<'a>(&'a self, stream: &'a str) -> Vec<ConsumerInfo<'a>> {
        let mut infos: Vec<ConsumerInfo<'a>> = self
            .by_stream
            .get(stream)
            .into_iter()
            .flat_map(|s| s.iter().map(|(name, c)| c.info(stream, name)))
            .collect();
        infos.sort_by(|a, b| a.durable.cmp(b.durable));
        infos
    }

    /// When a consumer needs a look: now when it can deliver new messages,
    /// else at its next deadline.
    pub fn next_timer(&self, streams: &Streams) -> Option<u64> {
        let mut at = None::<u64>;
        for (stream, consumers) in &self.by_stream {
            let last = streams.bounds(stream).map_or(0, |b| b.1);
            for c in consumers.values().filter(|c| c.bound.is_some()) {
                let due = if !c.paused && c.has_new(last) {
                    0
                } else {
                    c.next_due
                };
                if due != u64::MAX {
                    at = Some(at.map_or(due, |a| a.min(due)));
                }
            }
        }
        at
    }

    /// Delivers what each consumed consumer may get now: messages whose ack
    /// wait ended or that were `nak`ed, then new ones, up to a chunk each and
    /// `max_ack_pending` in all. A message delivered `max_deliver` times is
    /// given up and announced on `$streams.<stream>.<durable>.dead`.
    pub fn deliver(
        &mut self,
        tx: &Transaction,
        streams: &Streams,
        now: u64,
        done: &mut Vec<Done>,
        events: &mut Vec<(String, Bytes)>,
    ) -> rusqlite::Result<()> {
        for (stream, consumers) in self.by_stream.iter_mut() {
            let Some((first_seq, last_seq)) = streams.bounds(stream) else {
                continue;
            };
            for (durable, c) in consumers.iter_mut() {
                let Some(session) = c.bound else { continue };
                let due = now >= c.next_due;
                if c.paused {
                    if due {
                        for p in c.pending.values_mut().filter(|p| p.out && p.due_ms <= now) {
                            p.out = false;
                        }
                        c.refresh_due();
                    }
                    continue;
                }
                if !due && !c.has_new(last_seq) {
                    continue;
                }
                let mut frames = Vec::new();
                let mut bytes = 0u64;
                let full =
                    |frames: &Vec<Bytes>, bytes: u64| frames.len() >= CHUNK || bytes >= CHUNK_BYTES;
                if due {
                    let ready: Vec<u64> = c
                        .pending
                        .iter()
                        .filter(|(_, p)| p.due_ms <= now)
                        .map(|(seq, _)| *seq)
                        .collect();
                    for seq in ready {
                        if full(&frames, bytes) {
                            break;
                        }
                        let deliveries = c.pending[&seq].deliveries;
                        let message = if deliveries >= c.settings.max_deliver {
                            c.dead += 1;
                            tracing::warn!(%stream, %durable, seq, deliveries, "a consumer's message was given up after max_deliver deliveries");
                            events.push(dead_event(stream, durable, seq, deliveries));
                            None
                        } else {
                            let m = Stored::read(tx, stream, seq)?;
                            if m.is_none() {
                                c.trimmed += 1;
                            }
                            m
                        };
                        let Some(m) = message else {
                            c.pending.remove(&seq);
                            delete_pending(tx, stream, durable, seq)?;
                            continue;
                        };
                        let p = c.pending.get_mut(&seq).expect("listed above");
                        p.deliveries += 1;
                        p.out = true;
                        p.due_ms = now + c.settings.ack_wait_ms;
                        put_pending(tx, stream, durable, seq, p.deliveries)?;
                        bytes += m.size;
                        frames.push(m.frame(stream, None, Some((durable, p.deliveries))));
                    }
                }
                c.skip_trimmed(first_seq);
                let mut scanned = 0;
                while !full(&frames, bytes) && c.has_new(last_seq) && scanned < SCAN {
                    let room = c.settings.max_ack_pending as usize - c.pending.len();
                    let want = room.min(CHUNK - frames.len()).min(SCAN - scanned);
                    let mut stmt = tx.prepare_cached(&format!(
                        "{SELECT_STORED} WHERE stream = ?1 AND seq >= ?2 AND seq <= ?3 ORDER BY seq LIMIT ?4"
                    ))?;
                    let mut rows = stmt.query(params![
                        &**stream,
                        c.next_seq as i64,
                        last_seq as i64,
                        want as i64
                    ])?;
                    let (mut read, mut stopped) = (0, false);
                    while let Some(r) = rows.next()? {
                        let m = Stored::from_row(r)?;
                        read += 1;
                        c.next_seq = m.seq + 1;
                        c.dirty = true;
                        if c.settings
                            .filter
                            .as_deref()
                            .is_some_and(|f| !crate::subject::matches(f, &m.subject))
                        {
                            continue;
                        }
                        let pending = Pending {
                            deliveries: 1,
                            due_ms: now + c.settings.ack_wait_ms,
                            out: true,
                        };
                        c.pending.insert(m.seq, pending);
                        put_pending(tx, stream, durable, m.seq, 1)?;
                        bytes += m.size;
                        frames.push(m.frame(stream, None, Some((durable, 1))));
                        if full(&frames, bytes) {
                            stopped = true;
                            break;
                        }
                    }
                    scanned += read;
                    if !stopped && read < want {
                        // Read to the end (skipped the rest past the last).
                        c.next_seq = c.next_seq.max(last_seq + 1);
                        break;
                    }
                }
                if c.dirty {
                    c.dirty = false;
                    tx.prepare_cached(
                        "UPDATE stream_consumers SET next_seq = ?3 WHERE stream = ?1 AND name = ?2",
                    )?
                    .execute(params![
                        &**stream,
                        &**durable,
                        c.next_seq as i64
                    ])?;
                }
                if !frames.is_empty() {
                    c.paused = true;
                    done.push(Done {
                        session,
                        rid: None,
                        answer: Answer::Deliveries(Deliveries {
                            stream: stream.clone(),
                            durable: durable.clone(),
                            frames,
                        }),
                    });
                }
                c.refresh_due();
            }
        }
        Ok(())
    }
}

fn put_pending(
    tx: &Transaction,
    stream: &str,
    durable: &str,
    seq: u64,
    deliveries: u32,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO consumer_pending (stream, name, seq, deliveries) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![stream, durable, seq as i64, deliveries])?;
    Ok(())
}

fn delete_pending(tx: &Transaction, stream: &str, durable: &str, seq: u64) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM consumer_pending WHERE stream = ?1 AND name = ?2 AND seq = ?3")?
        .execute(params![stream, durable, seq as i64])?;
    Ok(())
}

fn dead_event(stream: &str, durable: &str, seq: u64, deliveries: u32) -> (String, Bytes) {
    let body = serde_json::json!({
        "stream": stream, "durable": durable, "seq": seq, "deliveries": deliveries,
    });
    (
        format!("$streams.{stream}.{durable}.dead"),
        Bytes::from(body.to_string()),
    )
}
