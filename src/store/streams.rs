//! Streams as the store keeps them: declared in a YAML file, each stores the
//! publishes on its subjects with a sequence number, trims by count, bytes and
//! age, and is read back a chunk at a time by `replay`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use rusqlite::{params, OptionalExtension, Transaction};
use serde::Deserialize;

use crate::protocol::streams::{self as wire, From};
use crate::protocol::{ErrorCode, ProtocolError};
use crate::router::SessionKey;

/// Messages, and bytes (at least one message), one replay chunk reads; the
/// router asks for the next chunk once the client has room for it.
pub const CHUNK: usize = 256;
pub const CHUNK_BYTES: u64 = 1024 * 1024;

/// One stream, as declared.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    pub name: String,
    pub subjects: Vec<String>,
    pub max_messages: Option<u64>,
    pub max_bytes: Option<u64>,
    pub max_age_s: Option<f64>,
}

impl StreamConfig {
    pub fn takes(&self, subject: &str) -> bool {
        self.subjects
            .iter()
            .any(|p| crate::subject::matches(p, subject))
    }
}

/// Reads and checks a streams file: `streams: [{name, subjects, max_messages?,
/// max_bytes?, max_age_s?}]`.
pub fn load_config(path: &Path) -> Result<Vec<StreamConfig>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        streams: Vec<StreamConfig>,
    }
    let at = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {at}: {e}"))?;
    let file: File = serde_yaml_ng::from_str(&text).map_err(|e| format!("{at}: {e}"))?;
    let mut names = std::collections::HashSet::new();
    for s in &file.streams {
        let name_ok = !s.name.is_empty()
            && s.name.len() <= 64
            && s.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(format!(
                "{at}: stream name `{}` must be 1 to 64 letters, digits, `-` or `_`",
                s.name
            ));
        }
        if !names.insert(s.name.clone()) {
            return Err(format!("{at}: stream `{}` is declared twice", s.name));
        }
        if s.subjects.is_empty() {
            return Err(format!("{at}: stream `{}` has no subjects", s.name));
        }
        for p in &s.subjects {
            crate::subject::check_pattern(p)
                .map_err(|e| format!("{at}: stream `{}`: {e}", s.name))?;
        }
        if s.max_age_s.is_some_and(|a| !(a.is_finite() && a > 0.0)) {
            return Err(format!(
                "{at}: stream `{}`: max_age_s must be over 0",
                s.name
            ));
        }
    }
    Ok(file.streams)
}

/// A publish to store.
#[derive(Debug)]
pub struct Append {
    pub stream: Arc<str>,
    pub subject: Box<str>,
    pub sender: Option<Box<str>>,
    pub uid: Option<u32>,
    /// JSON text (`null` when the publish had no body).
    pub body: Bytes,
}

impl Append {
    /// What it weighs in the store's backlog ([`super::APPEND_BACKLOG_HIGH`]):
    /// its subject and body, and a little for the rest.
    pub fn weight(&self) -> usize {
        64 + self.subject.len() + self.body.len()
    }
}

/// Where a replay is: what the router hands back to get the next chunk.
#[derive(Debug, Clone)]
pub struct Cursor {
    pub session: SessionKey,
    pub replay: u64,
    pub stream: Arc<str>,
    pub filter: Option<Box<str>>,
    pub next_seq: u64,
    /// The stream's last message when the replay began: it ends there.
    pub end_seq: u64,
}

/// One chunk of a replay: frames to deliver, and the cursor of the next chunk
/// (`None`: the frames end with `replay_end`).
#[derive(Debug)]
pub struct Chunk {
    pub frames: Vec<Bytes>,
    pub next: Option<Cursor>,
}

#[derive(Debug)]
struct State {
    config: StreamConfig,
    /// First stored seq (`last_seq + 1` when empty).
    first_seq: u64,
    last_seq: u64,
    count: u64,
    bytes: u64,
}

#[derive(Debug, Default)]
pub struct Streams {
    by_name: HashMap<Arc<str>, State>,
    /// Streams appended to in the open transaction.
    touched: Vec<Arc<str>>,
    /// When streams trimmed by age are looked at next.
    age_check_ms: u64,
}

impl Streams {
    pub fn load(conn: &rusqlite::Connection, configs: &[StreamConfig]) -> rusqlite::Result<Self> {
        let mut streams = Streams::default();
        for config in configs {
            let last_seq: u64 = conn
                .query_row(
                    "SELECT last_seq FROM streams WHERE name = ?1",
                    [&config.name],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
                .unwrap_or(0) as u64;
            let (first, count, bytes): (Option<i64>, i64, i64) = conn.query_row(
                "SELECT MIN(seq), COUNT(*), COALESCE(SUM(size), 0) FROM stream_messages WHERE stream = ?1",
                [&config.name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            streams.by_name.insert(
                config.name.as_str().into(),
                State {
                    config: config.clone(),
                    first_seq: first.map_or(last_seq + 1, |f| f as u64),
                    last_seq,
                    count: count as u64,
                    bytes: bytes as u64,
                },
            );
        }
        Ok(streams)
    }

    /// When a stream trimmed by age that holds messages is to be looked at
    /// (about every second).
    pub fn next_timer(&self) -> Option<u64> {
        self.by_name
            .values()
            .any(|s| s.config.max_age_s.is_some() && s.count > 0)
            .then_some(self.age_check_ms)
    }

    pub fn append(&mut self, tx: &Transaction, a: Append, now: u64) -> rusqlite::Result<()> {
        let Some(state) = self.by_name.get_mut(&a.stream) else {
            return Ok(());
        };
        let seq = state.last_seq + 1;
        let size = (a.subject.len() + a.body.len()) as u64;
        let id = uuid::Uuid::now_v7().hyphenated().to_string();
        tx.prepare_cached(
            "INSERT INTO stream_messages (stream, seq, id, ts_ms, subject, sender, uid, body, size)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            &*a.stream,
            seq as i64,
            id,
            now as i64,
            &*a.subject,
            a.sender.as_deref(),
            a.uid,
            &a.body[..],
            size as i64
        ])?;
        if state.count == 0 {
            state.first_seq = seq;
        }
        state.last_seq = seq;
        state.count += 1;
        state.bytes += size;
        if !self.touched.contains(&a.stream) {
            self.touched.push(a.stream);
        }
        Ok(())
    }

    /// Writes the touched streams' sequences and trims every stream to its
    /// limits. A failed transaction is undone by reading the state back.
    pub fn finish(&mut self, tx: &Transaction, now: u64) -> rusqlite::Result<()> {
        // Ages are looked at about once a second, not at every commit.
        let check_age = now >= self.age_check_ms;
        if check_age {
            self.age_check_ms = now + 1000;
        }
        for name in std::mem::take(&mut self.touched) {
            if let Some(s) = self.by_name.get(&name) {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO streams (name, last_seq) VALUES (?1, ?2)",
                )?
                .execute(params![&*name, s.last_seq as i64])?;
            }
        }
        for (name, s) in self.by_name.iter_mut() {
            if s.count == 0 {
                continue;
            }
            let mut cut = 0u64; // trim every seq below this
            if let Some(max) = s.config.max_messages {
                if s.count > max {
                    cut = s.first_seq + (s.count - max);
                }
            }
            if let Some(max_age) = s.config.max_age_s.filter(|_| check_age) {
                let before = now.saturating_sub((max_age * 1000.0) as u64) as i64;
                // Walks the stream from its oldest message and stops at the first
                // young enough: the cost is what is trimmed.
                let after: Option<i64> = tx
                    .prepare_cached(
                        "SELECT seq FROM stream_messages WHERE stream = ?1 AND ts_ms >= ?2 ORDER BY seq LIMIT 1",
                    )?
                    .query_row(params![&**name, before], |r| r.get(0))
                    .optional()?;
                cut = cut.max(after.map_or(s.last_seq + 1, |a| a as u64));
            }
            if let Some(max) = s.config.max_bytes {
                if s.bytes > max {
                    let mut over = s.bytes - max;
                    let mut stmt = tx.prepare_cached(
                        "SELECT seq, size FROM stream_messages WHERE stream = ?1 AND seq >= ?2 ORDER BY seq",
                    )?;
                    let mut rows = stmt.query(params![&**name, cut.max(s.first_seq) as i64])?;
                    let mut upto = cut;
                    while let Some(r) = rows.next()? {
                        let (seq, size): (i64, i64) = (r.get(0)?, r.get(1)?);
                        upto = seq as u64 + 1;
                        if size as u64 >= over {
                            break;
                        }
                        over -= size as u64;
                    }
                    cut = cut.max(upto);
                }
            }
            if cut > s.first_seq {
                let (n, bytes): (i64, i64) = tx
                    .prepare_cached(
                        "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM stream_messages WHERE stream = ?1 AND seq < ?2",
                    )?
                    .query_row(params![&**name, cut as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
                tx.prepare_cached("DELETE FROM stream_messages WHERE stream = ?1 AND seq < ?2")?
                    .execute(params![&**name, cut as i64])?;
                s.count -= n as u64;
                s.bytes -= bytes as u64;
                s.first_seq = cut.min(s.last_seq + 1);
            }
        }
        Ok(())
    }

    /// After a failed commit: the state the tables hold.
    pub fn reload(&mut self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        let configs: Vec<StreamConfig> = self.by_name.values().map(|s| s.config.clone()).collect();
        *self = Streams::load(conn, &configs)?;
        Ok(())
    }

    /// A declared stream's first kept and last seq.
    pub fn bounds(&self, name: &str) -> Option<(u64, u64)> {
        self.by_name.get(name).map(|s| (s.first_seq, s.last_seq))
    }

    pub fn info(&self, name: &str) -> Option<wire::Info<'_>> {
        self.by_name.get(name).map(|s| wire::Info {
            name: &s.config.name,
            subjects: &s.config.subjects,
            messages: s.count,
            bytes: s.bytes,
            first_seq: s.first_seq,
            last_seq: s.last_seq,
            max_messages: s.config.max_messages,
            max_bytes: s.config.max_bytes,
            max_age_s: s.config.max_age_s,
        })
    }

    pub fn list(&self) -> Bytes {
        let mut infos: Vec<wire::Info<'_>> =
            self.by_name.keys().filter_map(|n| self.info(n)).collect();
        infos.sort_by(|a, b| a.name.cmp(b.name));
        wire::list(&infos)
    }

    /// Where a replay starts, or why it cannot.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &self,
        tx: &Transaction,
        session: SessionKey,
        replay: u64,
        stream: &str,
        filter: Option<Box<str>>,
        from: From,
    ) -> rusqlite::Result<Result<(Bytes, Cursor), Bytes>> {
        let start = match self.start_seq(tx, stream, from)? {
            Ok(start) => start,
            Err(refused) => return Ok(Err(refused)),
        };
        let s = &self.by_name[stream];
        let answer = wire::replaying(replay, stream, s.first_seq, s.last_seq);
        Ok(Ok((
            answer,
            Cursor {
                session,
                replay,
                stream: stream.into(),
                filter,
                next_seq: start,
                end_seq: s.last_seq,
            },
        )))
    }

    /// The seq `from` names in `stream` (past the last when it names nothing
    /// stored yet), or the error frame saying why there is none.
    pub fn start_seq(
        &self,
        tx: &Transaction,
        stream: &str,
        from: From,
    ) -> rusqlite::Result<Result<u64, Bytes>> {
        let Some(s) = self.by_name.get(stream) else {
            return Ok(Err(no_stream(stream)));
        };
        let gone = |seq: u64| {
            ProtocolError::new(
                ErrorCode::SeqGone,
                format!(
                    "seq {seq} of stream `{stream}` is not kept (seqs start at 1, and trimmed ones are gone); the first kept is {}",
                    s.first_seq
                ),
            )
            .to_frame()
        };
        Ok(Ok(match from {
            From::First => s.first_seq,
            From::Last => s.last_seq.max(s.first_seq),
            From::New => s.last_seq + 1,
            From::Seq(seq) if seq < s.first_seq => return Ok(Err(gone(seq))),
            // Past the end (and past what SQLite's integers hold): nothing to send.
            From::Seq(seq) => seq.min(s.last_seq + 1),
            From::Time(ms) if ms > i64::MAX as u64 => s.last_seq + 1,
            From::Time(ms) => tx
                .prepare_cached(
                    "SELECT seq FROM stream_messages WHERE stream = ?1 AND ts_ms >= ?2 ORDER BY seq LIMIT 1",
                )?
                .query_row(params![stream, ms as i64], |r| r.get::<_, i64>(0))
                .optional()?
                .map_or(s.last_seq + 1, |q| q as u64),
            From::Id(id) => match tx
                .prepare_cached("SELECT seq FROM stream_messages WHERE stream = ?1 AND id = ?2")?
                .query_row(params![stream, &*id], |r| r.get::<_, i64>(0))
                .optional()?
            {
                Some(seq) => seq as u64,
                None => {
                    return Ok(Err(ProtocolError::new(
                        ErrorCode::SeqGone,
                        format!("no message {id} in stream `{stream}`: never stored, or trimmed"),
                    )
                    .to_frame()))
                }
            },
        }))
    }

    /// Reads the chunk at `cursor`.
    pub fn chunk(&self, tx: &Transaction, mut cursor: Cursor) -> rusqlite::Result<Chunk> {
        let mut frames = Vec::new();
        if let Some(s) = self.by_name.get(&cursor.stream) {
            // Trimmed while the replay ran: it goes on from what is kept.
            cursor.next_seq = cursor.next_seq.max(s.first_seq);
        }
        let mut stmt = tx.prepare_cached(&format!(
            "{SELECT_STORED} WHERE stream = ?1 AND seq >= ?2 AND seq <= ?3 ORDER BY seq LIMIT ?4"
        ))?;
        let mut rows = stmt.query(params![
            &*cursor.stream,
            cursor.next_seq as i64,
            cursor.end_seq as i64,
            CHUNK as i64
        ])?;
        let (mut read, mut bytes) = (0, 0u64);
        while let Some(r) = rows.next()? {
            if bytes >= CHUNK_BYTES {
                break; // the rest in the next chunk
            }
            let m = Stored::from_row(r)?;
            read += 1;
            bytes += m.size;
            cursor.next_seq = m.seq + 1;
            if cursor
                .filter
                .as_deref()
                .is_some_and(|f| !crate::subject::matches(f, &m.subject))
            {
                continue;
            }
            frames.push(m.frame(&cursor.stream, Some(cursor.replay), None));
        }
        if (read < CHUNK && bytes < CHUNK_BYTES) || cursor.next_seq > cursor.end_seq {
            frames.push(wire::replay_end(
                cursor.replay,
                &cursor.stream,
                cursor.end_seq,
            ));
            return Ok(Chunk { frames, next: None });
        }
        Ok(Chunk {
            frames,
            next: Some(cursor),
        })
    }
}

fn no_stream(stream: &str) -> Bytes {
    ProtocolError::new(
        ErrorCode::NotFound,
        format!("no stream `{stream}`; `hookbus stream ls` lists them"),
    )
    .to_frame()
}

/// The columns [`Stored::from_row`] reads.
pub(super) const SELECT_STORED: &str =
    "SELECT seq, id, ts_ms, subject, sender, uid, body, size FROM stream_messages";

/// A stored message, as read back.
pub(super) struct Stored {
    pub seq: u64,
    id: String,
    ts_ms: u64,
    pub subject: String,
    sender: Option<String>,
    uid: Option<u32>,
    body: Vec<u8>,
    pub size: u64,
}

impl Stored {
    pub fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Stored {
            seq: r.get::<_, i64>(0)? as u64,
            id: r.get(1)?,
            ts_ms: r.get::<_, i64>(2)? as u64,
            subject: r.get(3)?,
            sender: r.get(4)?,
            uid: r.get(5)?,
            body: r.get(6)?,
            size: r.get::<_, i64>(7)? as u64,
        })
    }

    /// Message `seq` of `stream`, if it is still kept.
    pub fn read(tx: &Transaction, stream: &str, seq: u64) -> rusqlite::Result<Option<Self>> {
        tx.prepare_cached(&format!("{SELECT_STORED} WHERE stream = ?1 AND seq = ?2"))?
            .query_row(params![stream, seq as i64], Stored::from_row)
            .optional()
    }

    /// Its `stream_event` frame: for a replay, or for a durable consumer
    /// (`durable`, and how many times it was delivered).
    pub fn frame(&self, stream: &str, replay: Option<u64>, durable: Option<(&str, u32)>) -> Bytes {
        wire::event(&wire::Event {
            replay,
            durable: durable.map(|d| d.0),
            stream,
            seq: self.seq,
            deliveries: durable.map(|d| d.1),
            id: &self.id,
            ts_ms: self.ts_ms,
            subject: &self.subject,
            from: self.sender.as_deref(),
            uid: self.uid,
            body: wire::raw(&self.body),
        })
    }
}
