//! Durable state: one SQLite database in WAL mode under the state directory,
//! owned by one thread, the store actor, so no disk work runs on the async
//! runtime or in the router.
//!
//! The router sends it [`Request`]s over a bounded channel without waiting.
//! The actor takes every request queued (up to [`MAX_BATCH`]) into one
//! transaction and commits it with one sync (group commit), then hands the
//! outcomes and the changes back over its own channel, in order: a client is
//! answered only after its write committed. A failed commit (disk full, I/O
//! error) undoes the batch, answers every write in it `storage_unavailable`
//! and marks the store degraded; it retries every [`RETRY_EVERY`] and is
//! healthy again at its first successful commit.

pub mod consumers;
pub mod jobs;
pub mod kv;
pub mod retained;
mod schema;
pub mod streams;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use rusqlite::Connection;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::protocol::{Op, Rid};
use crate::router::SessionKey;

/// Requests queued to the store at most; past it the router refuses
/// persistent requests with `storage_unavailable` rather than wait.
pub const STORE_QUEUE: usize = 16 * 1024;

/// Bytes of stream appends (subject and body, and a little for the rest) the
/// store may have queued or be committing before the router holds back the
/// publishers whose publishes streams keep, until it is below half of this
/// (the default of [`StoreConfig::append_backlog`]).
pub const APPEND_BACKLOG_HIGH: usize = 16 * 1024 * 1024;

/// Most requests committed in one transaction.
pub const MAX_BATCH: usize = 4096;

/// How often a store that cannot write tries again on its own.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// The database file in the state directory.
pub const DB_FILE: &str = "hookbus.sqlite3";

/// Locked by the daemon that has the state directory open.
pub const LOCK_FILE: &str = "hookbus.lock";

/// How hard a commit syncs (SQLite's `synchronous` in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SyncPolicy {
    /// Every commit is synced to disk before it is answered: survives power loss.
    #[default]
    Full,
    /// The log is synced at checkpoints only: survives a crash of the daemon
    /// (kill -9), may lose the last commits on power loss.
    Normal,
}

impl SyncPolicy {
    pub fn name(self) -> &'static str {
        match self {
            SyncPolicy::Full => "full",
            SyncPolicy::Normal => "normal",
        }
    }
}

/// Where and how the store keeps its data.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub dir: PathBuf,
    pub sync: SyncPolicy,
    pub jobs: jobs::JobsConfig,
    pub streams: Vec<streams::StreamConfig>,
    /// Weight of stream appends waiting for the store past which publishers to
    /// streams are held back ([`APPEND_BACKLOG_HIGH`] by default).
    pub append_backlog: usize,
}

impl StoreConfig {
    pub fn new(dir: impl Into<PathBuf>, sync: SyncPolicy) -> Self {
        StoreConfig {
            dir: dir.into(),
            sync,
            jobs: jobs::JobsConfig::default(),
            streams: Vec::new(),
            append_backlog: APPEND_BACKLOG_HIGH,
        }
    }
}

/// A session's request to the store.
#[derive(Debug)]
pub struct Request {
    pub session: SessionKey,
    pub rid: Option<Rid>,
    pub op: StoreOp,
}

#[derive(Debug)]
pub enum StoreOp {
    Kv(kv::Write),
    /// A read the router answers itself, queued behind the session's writes
    /// so that it sees them: handed back, in order, once they committed.
    After(Box<Op>),
    Job(crate::protocol::jobs::JobOp),
    /// The session ended: its leases are given up, its claims stop waiting.
    SessionClosed,
    /// Publishes to keep in streams (not answered).
    /// Stream appends, and their weight in the backlog.
    Append(Vec<streams::Append>, usize),
    /// Retained values set or cleared (not answered).
    Retain(Vec<retained::Change>),
    /// `replay` (numbered `replay` by the router), `stream_info`, `stream_list`.
    Stream {
        op: crate::protocol::streams::StreamOp,
        replay: u64,
    },
    /// The next chunk of a replay, once its client has room.
    ReplayNext(streams::Cursor),
    /// More of a durable consumer's messages, once its client has room.
    ConsumeNext {
        stream: Arc<str>,
        durable: Arc<str>,
    },
}

/// What became of one request.
#[derive(Debug)]
pub enum Answer {
    Kv(kv::Outcome),
    After(Box<Op>),
    /// A KV write not written: why.
    Unavailable(String),
    /// The answer frame, built by the store (jobs).
    Frame(bytes::Bytes),
    /// Frames of a replay; the first answers the request.
    Replay(streams::Chunk),
    /// A durable consumer's messages (not an answer: no `rid`).
    Deliveries(consumers::Deliveries),
}

impl Answer {
    /// Whether it answers a KV request (which the router counts in flight).
    pub fn is_kv(&self) -> bool {
        matches!(
            self,
            Answer::Kv(_) | Answer::After(_) | Answer::Unavailable(_)
        )
    }
}

#[derive(Debug)]
pub struct Done {
    pub session: SessionKey,
    pub rid: Option<Rid>,
    pub answer: Answer,
}

/// What the store tells the router, in commit order.
#[derive(Debug)]
pub enum FromStore {
    /// The KV as found when the store opened late (it could not at start).
    Loaded { kv: Vec<kv::Entry> },
    /// A batch ended: the outcomes, then the changes it committed (writes and
    /// expiries), to apply before answering.
    Committed {
        done: Vec<Done>,
        changes: Vec<kv::Change>,
        /// Events to publish (`$jobs.<goal>.dead`): subject and body.
        events: Vec<(String, bytes::Bytes)>,
    },
}

/// Whether the store can write; read by `status`.
#[derive(Debug)]
pub struct Health {
    pub path: PathBuf,
    pub sync: SyncPolicy,
    degraded: AtomicBool,
    /// Why it is degraded. Locked only to copy a string in or out.
    error: Mutex<Option<String>>,
    /// Jobs queued and leased, and claims waiting, after the last commit.
    jobs: [AtomicUsize; 3],
    /// Publishes a stream did not keep because the store could not write.
    pub appends_lost: std::sync::atomic::AtomicU64,
    /// Retained values not kept on disk because the store could not write.
    pub retained_lost: std::sync::atomic::AtomicU64,
    /// Weight of the stream appends queued for the store or being committed
    /// ([`streams::Append::weight`]): the router adds, the store takes away.
    append_backlog: AtomicUsize,
}

impl Health {
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Weight of the stream appends the store has yet to commit.
    pub fn append_backlog(&self) -> usize {
        self.append_backlog.load(Ordering::Relaxed)
    }

    pub fn report(&self) -> serde_json::Value {
        let error = self.error.lock().map(|e| e.clone()).unwrap_or_default();
        serde_json::json!({
            "state": if self.is_degraded() { "degraded" } else { "ok" },
            "path": self.path,
            "sync": self.sync.name(),
            "error": error,
            "jobs": {
                "queued": self.jobs[0].load(Ordering::Relaxed),
                "leased": self.jobs[1].load(Ordering::Relaxed),
                "claims_waiting": self.jobs[2].load(Ordering::Relaxed),
            },
            "stream_appends_lost": self.appends_lost.load(Ordering::Relaxed),
            "append_backlog": self.append_backlog(),
            "retained_lost": self.retained_lost.load(Ordering::Relaxed),
        })
    }

    fn set(&self, error: Option<String>) {
        let was = self.degraded.swap(error.is_some(), Ordering::Relaxed);
        match (&error, was) {
            (Some(e), false) => {
                warn!(error = %e, path = %self.path.display(), "store degraded: persistent requests are refused until it can write again")
            }
            (None, true) => info!(path = %self.path.display(), "store writes again"),
            _ => {}
        }
        if let Ok(mut slot) = self.error.lock() {
            *slot = error;
        }
    }
}

/// The router's handle on the store.
#[derive(Debug)]
pub struct Store {
    tx: std_mpsc::SyncSender<Request>,
    pub health: Arc<Health>,
    /// The declared streams, for the router to pick what to append.
    pub streams: Arc<Vec<streams::StreamConfig>>,
    /// [`StoreConfig::append_backlog`].
    pub append_backlog: usize,
}

/// A started store: the router's handle, the KV's entries (`None` when the
/// database could not be read yet), the channel of what it commits, its thread.
pub struct Started {
    pub store: Store,
    pub kv: Option<Vec<kv::Entry>>,
    /// Retained values, by subject (the event's tail).
    pub retained: Vec<(String, bytes::Bytes)>,
    pub from_store: mpsc::Receiver<FromStore>,
    pub thread: StoreThread,
}

/// The store actor's thread; joined at shutdown so the database closes cleanly.
pub struct StoreThread(std::thread::JoinHandle<()>);

impl StoreThread {
    pub fn join(self) {
        let _ = self.0.join();
    }
}

impl Store {
    /// Opens the database (blocking: call it off the async runtime) and starts
    /// the actor, returning the KV's entries. When it cannot open, the store
    /// starts degraded (`None`), keeps trying, and sends [`FromStore::Loaded`]
    /// once it could.
    pub fn start(config: StoreConfig) -> std::io::Result<Started> {
        let path = config.dir.join(DB_FILE);
        let health = Arc::new(Health {
            path: path.clone(),
            sync: config.sync,
            degraded: AtomicBool::new(false),
            error: Mutex::new(None),
            jobs: Default::default(),
            appends_lost: Default::default(),
            retained_lost: Default::default(),
            append_backlog: Default::default(),
        });
        let (tx, rx) = std_mpsc::sync_channel(STORE_QUEUE);
        let declared = Arc::new(config.streams.clone());
        let append_backlog = config.append_backlog;
        let (out, from_store) = mpsc::channel(64);
        let mut actor = Actor {
            config,
            health: health.clone(),
            db: None,
            out,
        };
        let loaded = match actor.open() {
            Ok(entries) => Some(entries),
            Err(e) => {
                health.set(Some(e));
                None
            }
        };
        let kept = match actor.db.as_ref().map(|db| retained::load(&db.conn)) {
            Some(Ok(kept)) => kept,
            Some(Err(e)) => {
                warn!(error = %e, "cannot read the retained values back");
                Vec::new()
            }
            None => Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("hookbus-store".into())
            .spawn(move || actor.run(rx))?;
        Ok(Started {
            store: Store {
                tx,
                health,
                streams: declared,
                append_backlog,
            },
            kv: loaded,
            retained: kept,
            from_store,
            thread: StoreThread(thread),
        })
    }

    /// Queues stream appends of `weight` ([`streams::Append::weight`], summed),
    /// counted in the backlog; `Err` with how many when the store is too far
    /// behind to take them.
    pub fn append(&self, appends: Vec<streams::Append>, weight: usize) -> Result<(), usize> {
        let n = appends.len();
        // Counted first: the store may take them away as soon as they are sent.
        self.health
            .append_backlog
            .fetch_add(weight, Ordering::Relaxed);
        let request = Request {
            session: crate::router::EMITTER,
            rid: None,
            op: StoreOp::Append(appends, weight),
        };
        self.send(request).map_err(|_| {
            self.health
                .append_backlog
                .fetch_sub(weight, Ordering::Relaxed);
            n
        })
    }

    /// Queues a request without waiting; `Err` holds it back with the reason
    /// when the store is too far behind.
    pub fn send(&self, request: Request) -> Result<(), Box<(Request, String)>> {
        self.tx.try_send(request).map_err(|e| {
            Box::new(match e {
                std_mpsc::TrySendError::Full(r) => (
                    r,
                    format!("the store has {STORE_QUEUE} requests waiting for the disk; try again shortly"),
                ),
                std_mpsc::TrySendError::Disconnected(r) => (r, "the store has stopped".to_owned()),
            })
        })
    }
}

struct Db {
    conn: Connection,
    kv: kv::Kv,
    jobs: jobs::Jobs,
    streams: streams::Streams,
    consumers: consumers::Consumers,
    /// Held locked while the database is open: one daemon per state directory.
    _lock: Flock<std::fs::File>,
}

struct Actor {
    config: StoreConfig,
    health: Arc<Health>,
    db: Option<Db>,
    out: mpsc::Sender<FromStore>,
}

impl Actor {
    fn run(mut self, rx: std_mpsc::Receiver<Request>) {
        loop {
            if self.db.is_none() && self.health.is_degraded() {
                if let Ok(kv) = self.open() {
                    self.health.set(None);
                    if self.out.blocking_send(FromStore::Loaded { kv }).is_err() {
                        break;
                    }
                }
            }
            let now = now_ms();
            let wait = match self.db.as_ref().and_then(Db::next_timer) {
                _ if self.health.is_degraded() => RETRY_EVERY,
                Some(at) => Duration::from_millis(at.saturating_sub(now)).min(RETRY_EVERY * 60),
                None => RETRY_EVERY * 60,
            };
            let mut batch = Vec::new();
            match rx.recv_timeout(wait) {
                Ok(first) => batch.push(first),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let appended: usize = batch
                .iter()
                .map(|r| match &r.op {
                    StoreOp::Append(_, weight) => *weight,
                    _ => 0,
                })
                .sum();
            let result = self.commit(batch);
            // Committed, or counted lost: either way out of the backlog.
            self.health
                .append_backlog
                .fetch_sub(appended, Ordering::Relaxed);
            if let Some(result) = result {
                if self.out.blocking_send(result).is_err() {
                    break;
                }
            }
        }
        if let Some(db) = self.db.take() {
            if let Err((_, e)) = db.conn.close() {
                warn!(error = %e, "closing the store failed");
            }
        }
    }

    /// Opens the database, migrated, and reads the KV.
    fn open(&mut self) -> Result<Vec<kv::Entry>, String> {
        let dir = &self.config.dir;
        create_private_dir(dir)
            .map_err(|e| format!("cannot create the state directory {}: {e}", dir.display()))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = std::fs::File::create(&lock_path)
            .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
        let lock = Flock::lock(lock, FlockArg::LockExclusiveNonblock).map_err(|_| {
            format!(
                "another hookbus daemon uses the state directory {}: give this one its own with --state-dir",
                dir.display()
            )
        })?;
        let path = dir.join(DB_FILE);
        let fail = |e: rusqlite::Error| format!("cannot open {}: {e}", path.display());
        let mut conn = Connection::open(&path).map_err(fail)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        conn.pragma_update(None, "synchronous", self.config.sync.name())
            .map_err(fail)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(fail)?;
        schema::migrate(&mut conn).map_err(fail)??;
        let (kv, entries) = kv::Kv::load(&conn).map_err(fail)?;
        let jobs = jobs::Jobs::load(&conn, self.config.jobs, now_ms()).map_err(fail)?;
        let streams = streams::Streams::load(&conn, &self.config.streams).map_err(fail)?;
        let consumers = consumers::Consumers::load(&conn, &streams).map_err(fail)?;
        info!(path = %path.display(), keys = entries.len(), "store open");
        self.db = Some(Db {
            conn,
            kv,
            jobs,
            streams,
            consumers,
            _lock: lock,
        });
        Ok(entries)
    }

    /// Runs `batch`, due timers and waiting claims in one transaction.
    /// `None` when there was nothing to do.
    fn commit(&mut self, batch: Vec<Request>) -> Option<FromStore> {
        let now = now_ms();
        let due = self
            .db
            .as_ref()
            .and_then(Db::next_timer)
            .is_some_and(|at| at <= now);
        if batch.is_empty() && !due && !self.health.is_degraded() {
            return None;
        }
        let Some(db) = self.db.as_mut() else {
            let why = self.unavailable();
            return Some(FromStore::Committed {
                done: refuse_all(batch, &why, &self.health),
                changes: Vec::new(),
                events: Vec::new(),
            });
        };
        let mut done = Vec::with_capacity(batch.len());
        let mut changes = Vec::new();
        let mut out = jobs::Out::default();
        // Publishes taken for streams in this transaction: lost if it fails.
        let mut appended = 0u64;
        let mut batch = batch.into_iter();
        let health = &self.health;
        let result = (|| -> rusqlite::Result<()> {
            let tx = db.conn.transaction()?;
            for r in batch.by_ref() {
                let answer = match r.op {
                    StoreOp::Kv(write) => match db.kv.apply(&tx, write, now) {
                        Ok((outcome, change)) => {
                            changes.extend(change);
                            Answer::Kv(outcome)
                        }
                        Err(e) => {
                            done.push(Done {
                                session: r.session,
                                rid: r.rid,
                                answer: Answer::Unavailable(String::new()),
                            });
                            return Err(e);
                        }
                    },
                    StoreOp::After(op) => Answer::After(op),
                    StoreOp::Job(op) => {
                        // Answered through `out`, possibly later (a claim that waits).
                        db.jobs.apply(&tx, r.session, r.rid, op, now, &mut out)?;
                        continue;
                    }
                    StoreOp::SessionClosed => {
                        db.jobs.session_closed(&tx, r.session, now, &mut out)?;
                        db.consumers.session_closed(r.session, now);
                        continue;
                    }
                    StoreOp::ConsumeNext { stream, durable } => {
                        db.consumers.resume(r.session, &stream, &durable);
                        continue;
                    }
                    StoreOp::Append(appends, _) => {
                        appended += appends.len() as u64;
                        for a in appends {
                            db.streams.append(&tx, a, now)?;
                        }
                        continue;
                    }
                    StoreOp::Retain(changes) => {
                        retained::apply(&tx, changes)?;
                        continue;
                    }
                    StoreOp::ReplayNext(cursor) => Answer::Replay(db.streams.chunk(&tx, cursor)?),
                    StoreOp::Stream { op, replay } => {
                        use crate::protocol::streams::{self as wire, StreamOp};
                        match op {
                            StreamOp::List => Answer::Frame(db.streams.list()),
                            StreamOp::Info { stream } => {
                                Answer::Frame(match db.streams.info(&stream) {
                                    Some(info) => wire::info(&info, &db.consumers.infos(&stream)),
                                    None => crate::protocol::ProtocolError::new(
                                        crate::protocol::ErrorCode::NotFound,
                                        format!("no stream `{stream}`"),
                                    )
                                    .to_frame(),
                                })
                            }
                            StreamOp::Replay {
                                stream,
                                subject,
                                from,
                            } => match db
                                .streams
                                .start(&tx, r.session, replay, &stream, subject, from)?
                            {
                                Err(refused) => Answer::Frame(refused),
                                Ok((answer, cursor)) => {
                                    let mut chunk = db.streams.chunk(&tx, cursor)?;
                                    chunk.frames.insert(0, answer);
                                    Answer::Replay(chunk)
                                }
                            },
                            StreamOp::Consume(c) => Answer::Frame(db.consumers.consume(
                                &tx,
                                &db.streams,
                                r.session,
                                *c,
                                now,
                            )?),
                            StreamOp::Ack {
                                stream,
                                durable,
                                seq,
                                op,
                                delay_ms,
                            } => Answer::Frame(
                                db.consumers
                                    .ack(&tx, &stream, &durable, seq, op, delay_ms, now)?,
                            ),
                            StreamOp::Unconsume { stream, durable } => Answer::Frame(
                                db.consumers.unconsume(r.session, &stream, &durable, now),
                            ),
                            StreamOp::DeleteConsumer { stream, durable } => Answer::Frame(
                                db.consumers.delete(&tx, r.session, &stream, &durable)?,
                            ),
                        }
                    }
                };
                done.push(Done {
                    session: r.session,
                    rid: r.rid,
                    answer,
                });
            }
            db.kv.expire(&tx, now, &mut changes)?;
            db.jobs.tick(&tx, now, &mut out)?;
            db.consumers
                .deliver(&tx, &db.streams, now, &mut done, &mut out.events)?;
            db.kv.finish(&tx)?;
            db.streams.finish(&tx, now)?;
            // Proves the disk takes writes again while degraded.
            if health.is_degraded() {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO meta (name, value) VALUES ('probe', ?1)",
                )?
                .execute([now as i64])?;
            }
            tx.commit()
        })();
        match result {
            Ok(()) => {
                db.kv.committed();
                self.health.set(None);
                let (queued, leased, waiting) = db.jobs.counts();
                for (slot, n) in self.health.jobs.iter().zip([queued, leased, waiting]) {
                    slot.store(n, Ordering::Relaxed);
                }
                done.extend(out.answers.into_iter().map(|(session, rid, frame)| Done {
                    session,
                    rid,
                    answer: Answer::Frame(frame),
                }));
                if done.is_empty() && changes.is_empty() && out.events.is_empty() {
                    return None;
                }
                Some(FromStore::Committed {
                    done,
                    changes,
                    events: out.events,
                })
            }
            Err(e) => {
                db.kv.rolled_back();
                self.health
                    .appends_lost
                    .fetch_add(appended, Ordering::Relaxed);
                if let Err(e) = db.jobs.reload(&db.conn, now) {
                    warn!(error = %e, "cannot read the jobs back after a failed commit");
                }
                if let Err(e) = db.streams.reload(&db.conn) {
                    warn!(error = %e, "cannot read the streams back after a failed commit");
                }
                if let Err(e) = db.consumers.reload(&db.conn, &db.streams) {
                    warn!(error = %e, "cannot read the consumers back after a failed commit");
                }
                // Deliveries of the batch were not recorded: they go out again
                // from the state read back.
                done.retain(|d| !matches!(d.answer, Answer::Deliveries(_)));
                let why = format!("the store cannot write ({e}); nothing was stored");
                self.health.set(Some(why.clone()));
                // Every write of the batch is refused; reads queued behind
                // them are still answered.
                for d in &mut done {
                    if !matches!(d.answer, Answer::After(_)) {
                        d.answer = Answer::Unavailable(why.clone());
                    }
                }
                done.extend(out.answers.into_iter().map(|(session, rid, _)| Done {
                    session,
                    rid,
                    answer: Answer::Frame(storage_unavailable(&why)),
                }));
                done.extend(refuse_all(batch.collect(), &why, &self.health));
                Some(FromStore::Committed {
                    done,
                    changes: Vec::new(),
                    events: Vec::new(),
                })
            }
        }
    }

    fn unavailable(&self) -> String {
        self.health
            .error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_else(|| "the store is not open".to_owned())
    }
}

/// Answers every write of `batch` `storage_unavailable`; reads go through.
fn refuse_all(batch: Vec<Request>, why: &str, health: &Health) -> Vec<Done> {
    batch
        .into_iter()
        .filter_map(|r| {
            let answer = match r.op {
                StoreOp::After(op) => Answer::After(op),
                StoreOp::Kv(_) => Answer::Unavailable(why.to_owned()),
                StoreOp::Job(_) | StoreOp::Stream { .. } | StoreOp::ReplayNext(_) => {
                    Answer::Frame(storage_unavailable(why))
                }
                StoreOp::SessionClosed | StoreOp::ConsumeNext { .. } => return None,
                StoreOp::Retain(changes) => {
                    health
                        .retained_lost
                        .fetch_add(changes.len() as u64, Ordering::Relaxed);
                    return None;
                }
                StoreOp::Append(appends, _) => {
                    health
                        .appends_lost
                        .fetch_add(appends.len() as u64, Ordering::Relaxed);
                    return None;
                }
            };
            Some(Done {
                session: r.session,
                rid: r.rid,
                answer,
            })
        })
        .collect()
}

fn storage_unavailable(why: &str) -> bytes::Bytes {
    crate::protocol::ProtocolError::new(crate::protocol::ErrorCode::StorageUnavailable, why)
        .to_frame()
}

impl Db {
    fn next_timer(&self) -> Option<u64> {
        [
            self.kv.next_expiry(),
            self.jobs.next_timer(),
            self.streams.next_timer(),
            self.consumers.next_timer(&self.streams),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Unix time in ms.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
