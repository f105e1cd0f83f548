//! Jobs as the store keeps them: the `jobs` table, and in memory every job
//! not finished (queued or leased) with its place in the ready queue, the
//! timers (delays, backoffs, leases), the idempotency keys and the claims
//! waiting for work. The table is the truth: a commit that fails is undone by
//! reading the unfinished jobs back from it.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use rusqlite::{params, OptionalExtension, Transaction};
use serde_json::json;

use crate::protocol::jobs::{self as wire, JobInfo, JobOp, JobState, NewJob};
use crate::protocol::{ErrorCode, ProtocolError, Rid};
use crate::router::SessionKey;

/// How long finished jobs and idempotency keys are kept.
#[derive(Debug, Clone, Copy)]
pub struct JobsConfig {
    pub retention_ms: u64,
    pub idempotency_ms: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        // intent-bus's defaults: finished jobs 7 days, keys 1 hour.
        JobsConfig {
            retention_ms: 7 * 24 * 3600 * 1000,
            idempotency_ms: 3600 * 1000,
        }
    }
}

/// Most rows one `job_list` looks through, and most bytes of jobs it answers.
const LIST_SCAN: usize = 20_000;
const LIST_BYTES: usize = 4 * 1024 * 1024;

/// How often finished jobs and expired keys are swept.
const CLEANUP_EVERY_MS: u64 = 60_000;

/// What a batch's job requests and timers produced: answers (a waiting claim
/// may be answered in a later batch than its request) and events to publish.
#[derive(Debug, Default)]
pub struct Out {
    pub answers: Vec<(SessionKey, Option<Rid>, Bytes)>,
    pub events: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone)]
struct Lease {
    token: Arc<str>,
    until_ms: u64,
    /// Who holds it (unknown for a lease taken before a restart).
    holder: Option<SessionKey>,
}

#[derive(Debug, Clone)]
struct Live {
    goal: Arc<str>,
    payload: Bytes,
    priority: i64,
    attempt: u32,
    max_attempts: u32,
    backoff_ms: u64,
    ready_at_ms: u64,
    lease: Option<Lease>,
    /// Position among jobs of equal priority.
    seq: u64,
}

#[derive(Debug)]
struct Idem {
    job: Arc<str>,
    payload: Bytes,
    expires_ms: u64,
}

#[derive(Debug)]
struct Waiting {
    session: SessionKey,
    rid: Option<Rid>,
    pattern: Box<str>,
    lease_ms: u64,
    deadline_ms: u64,
}

/// A ready job's place in its goal's queue: priority (highest first), then age.
type Rank = (Reverse<i64>, u64, Arc<str>);

#[derive(Debug, Default)]
pub struct Jobs {
    config: JobsConfig,
    live: HashMap<Arc<str>, Live>,
    /// Jobs that may be claimed, by goal, best first: a claim looks at one
    /// queue per goal its pattern matches, never at every job.
    ready: HashMap<Arc<str>, BTreeSet<Rank>>,
    /// A job became ready since waiting claims were last matched.
    readied: bool,
    delayed: BTreeSet<(u64, Arc<str>)>,
    leases: BTreeSet<(u64, Arc<str>)>,
    /// Idempotency keys, per goal.
    idem: HashMap<(Arc<str>, Arc<str>), Idem>,
    waiting: VecDeque<Waiting>,
    seq: u64,
    next_cleanup_ms: u64,
}

fn error(code: ErrorCode, detail: impl Into<String>) -> Bytes {
    ProtocolError::new(code, detail).to_frame()
}

/// A factor in [0.5, 1.5), so retries of jobs that failed together spread out.
fn jitter() -> f64 {
    let r = uuid::Uuid::new_v4().as_u128() as u64;
    0.5 + (r >> 11) as f64 / (1u64 << 53) as f64
}

impl Jobs {
    /// Reads the unfinished jobs and the live idempotency keys.
    pub fn load(
        conn: &rusqlite::Connection,
        config: JobsConfig,
        now_ms: u64,
    ) -> rusqlite::Result<Self> {
        let mut jobs = Jobs {
            config,
            ..Jobs::default()
        };
        let mut stmt = conn.prepare(
            "SELECT id, goal, payload, state, priority, attempt, max_attempts, backoff_ms,
                    ready_at_ms, lease, lease_until_ms
             FROM jobs WHERE state IN ('queued', 'leased') ORDER BY created_ms, id",
        )?;
        let rows = stmt.query_map([], |r| {
            let id: String = r.get(0)?;
            let state: String = r.get(3)?;
            let lease = match (r.get::<_, Option<String>>(9)?, r.get::<_, Option<i64>>(10)?) {
                (Some(token), Some(until)) if state == "leased" => Some(Lease {
                    token: token.into(),
                    until_ms: until as u64,
                    holder: None,
                }),
                _ => None,
            };
            Ok((
                Arc::<str>::from(id),
                Live {
                    goal: r.get::<_, String>(1)?.into(),
                    payload: Bytes::from(r.get::<_, Vec<u8>>(2)?),
                    priority: r.get(4)?,
                    attempt: r.get::<_, i64>(5)? as u32,
                    max_attempts: r.get::<_, i64>(6)? as u32,
                    backoff_ms: r.get::<_, i64>(7)? as u64,
                    ready_at_ms: r.get::<_, i64>(8)? as u64,
                    lease,
                    seq: 0,
                },
            ))
        })?;
        for row in rows {
            let (id, mut job) = row?;
            jobs.seq += 1;
            job.seq = jobs.seq;
            jobs.place(&id, &job);
            jobs.live.insert(id, job);
        }
        let mut stmt = conn.prepare(
            "SELECT id, idem_key, payload, idem_expires_ms, goal FROM jobs
             WHERE idem_key IS NOT NULL AND idem_expires_ms > ?1",
        )?;
        let rows = stmt.query_map([now_ms as i64], |r| {
            Ok((
                (
                    Arc::<str>::from(r.get::<_, String>(4)?),
                    Arc::<str>::from(r.get::<_, String>(1)?),
                ),
                Idem {
                    job: r.get::<_, String>(0)?.into(),
                    payload: Bytes::from(r.get::<_, Vec<u8>>(2)?),
                    expires_ms: r.get::<_, i64>(3)? as u64,
                },
            ))
        })?;
        for row in rows {
            let (key, idem) = row?;
            jobs.idem.insert(key, idem);
        }
        Ok(jobs)
    }

    /// After a failed commit: the state the table holds, with the holders of
    /// leases that are still the same and the claims still waiting.
    pub fn reload(&mut self, conn: &rusqlite::Connection, now_ms: u64) -> rusqlite::Result<()> {
        let mut fresh = Jobs::load(conn, self.config, now_ms)?;
        for (id, job) in &mut fresh.live {
            if let (Some(lease), Some(old)) = (
                &mut job.lease,
                self.live.get(id).and_then(|j| j.lease.as_ref()),
            ) {
                if lease.token == old.token {
                    lease.holder = old.holder;
                }
            }
        }
        fresh.waiting = std::mem::take(&mut self.waiting);
        fresh.readied = true;
        fresh.next_cleanup_ms = self.next_cleanup_ms;
        *self = fresh;
        Ok(())
    }

    pub fn counts(&self) -> (usize, usize, usize) {
        let leased = self.leases.len();
        (self.live.len() - leased, leased, self.waiting.len())
    }

    /// Puts a live job in the index its state calls for.
    fn place(&mut self, id: &Arc<str>, job: &Live) {
        match &job.lease {
            Some(lease) => {
                self.leases.insert((lease.until_ms, id.clone()));
            }
            None if job.ready_at_ms > crate::store::now_ms() => {
                self.delayed.insert((job.ready_at_ms, id.clone()));
            }
            None => self.make_ready(id, job),
        }
    }

    fn make_ready(&mut self, id: &Arc<str>, job: &Live) {
        self.ready.entry(job.goal.clone()).or_default().insert((
            Reverse(job.priority),
            job.seq,
            id.clone(),
        ));
        self.readied = true;
    }

    fn unplace(&mut self, id: &Arc<str>, job: &Live) {
        if let Some(lease) = &job.lease {
            self.leases.remove(&(lease.until_ms, id.clone()));
        }
        self.delayed.remove(&(job.ready_at_ms, id.clone()));
        if let Some(queue) = self.ready.get_mut(&job.goal) {
            queue.remove(&(Reverse(job.priority), job.seq, id.clone()));
            if queue.is_empty() {
                self.ready.remove(&job.goal);
            }
        }
    }

    /// The earliest time a timer is due.
    pub fn next_timer(&self) -> Option<u64> {
        [
            self.delayed.first().map(|(t, _)| *t),
            self.leases.first().map(|(t, _)| *t),
            self.waiting.iter().map(|w| w.deadline_ms).min(),
            (self.next_cleanup_ms > 0).then_some(self.next_cleanup_ms),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn apply(
        &mut self,
        tx: &Transaction,
        session: SessionKey,
        rid: Option<Rid>,
        op: JobOp,
        now: u64,
        out: &mut Out,
    ) -> rusqlite::Result<()> {
        let answer = match op {
            JobOp::Publish(new) => self.publish(tx, new, now)?,
            JobOp::Claim {
                pattern,
                lease_ms,
                wait_ms,
            } => match self.first_ready(&pattern) {
                Some(id) => self.lease(tx, &id, lease_ms, session, now)?,
                None if wait_ms > 0 => {
                    self.waiting.push_back(Waiting {
                        session,
                        rid,
                        pattern,
                        lease_ms,
                        deadline_ms: now + wait_ms,
                    });
                    return Ok(());
                }
                None => wire::no_job(),
            },
            JobOp::Extend {
                job,
                lease,
                lease_ms,
            } => match self.leased(&job, &lease) {
                None => wire::lease_lost(&job),
                Some(mut live) => {
                    self.unplace(&job, &live);
                    let until = now + lease_ms;
                    if let Some(l) = &mut live.lease {
                        l.until_ms = until;
                    }
                    save(tx, &job, &live)?;
                    self.place(&job, &live);
                    self.live.insert(job.clone(), live);
                    wire::about("job_extended", &job, json!({"lease_until_ms": until}))
                }
            },
            JobOp::Fulfill { job, lease, result } => match self.leased(&job, &lease) {
                None => wire::lease_lost(&job),
                Some(live) => {
                    self.finish(
                        tx,
                        &job,
                        &live,
                        JobState::Done,
                        result.as_deref(),
                        None,
                        now,
                    )?;
                    wire::about("job_fulfilled", &job, json!({}))
                }
            },
            JobOp::Fail {
                job,
                lease,
                error,
                retry,
            } => match self.leased(&job, &lease) {
                None => wire::lease_lost(&job),
                Some(live) => {
                    let error = error.unwrap_or_else(|| "failed".to_owned());
                    let (state, ready_at) = if retry {
                        self.requeue_or_dead(tx, &job, live, &error, now, out)?
                    } else {
                        self.dead(tx, &job, &live, &error, now, out)?;
                        (JobState::Dead, None)
                    };
                    wire::about(
                        "job_failed",
                        &job,
                        json!({"state": state.name(), "ready_at_ms": ready_at}),
                    )
                }
            },
            JobOp::Status { job } => self.status(tx, &job)?,
            JobOp::List {
                state,
                pattern,
                limit,
            } => self.list(tx, state, pattern.as_deref(), limit)?,
            JobOp::Retry { job } => self.retry(tx, &job, now)?,
            JobOp::Cancel { job } => self.cancel(tx, &job, now)?,
        };
        out.answers.push((session, rid, answer));
        Ok(())
    }

    fn publish(&mut self, tx: &Transaction, new: NewJob, now: u64) -> rusqlite::Result<Bytes> {
        if let Some(key) = &new.idempotency_key {
            let scoped = (new.goal.clone(), key.clone());
            if let Some(idem) = self.idem.get(&scoped).filter(|i| i.expires_ms > now) {
                return Ok(if idem.payload == new.payload {
                    wire::published(&idem.job, true)
                } else {
                    error(
                        ErrorCode::IdempotencyConflict,
                        format!(
                            "idempotency key `{key}` was used for job {} with another payload",
                            idem.job
                        ),
                    )
                });
            }
        }
        let id: Arc<str> = uuid::Uuid::now_v7().hyphenated().to_string().into();
        self.seq += 1;
        let job = Live {
            goal: new.goal,
            payload: new.payload,
            priority: new.priority,
            attempt: 0,
            max_attempts: new.max_attempts,
            backoff_ms: new.backoff_ms,
            ready_at_ms: now + new.delay_ms,
            lease: None,
            seq: self.seq,
        };
        let idem_expires = new
            .idempotency_key
            .as_ref()
            .map(|_| now + self.config.idempotency_ms);
        tx.prepare_cached(
            "INSERT INTO jobs (id, goal, payload, state, priority, attempt, max_attempts, backoff_ms,
                               ready_at_ms, idem_key, idem_expires_ms, created_ms)
             VALUES (?1, ?2, ?3, 'queued', ?4, 0, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            &*id,
            &*job.goal,
            &job.payload[..],
            job.priority,
            job.max_attempts,
            job.backoff_ms as i64,
            job.ready_at_ms as i64,
            new.idempotency_key.as_deref(),
            idem_expires.map(|t| t as i64),
            now as i64,
        ])?;
        if let (Some(key), Some(expires_ms)) = (new.idempotency_key, idem_expires) {
            self.idem.insert(
                (job.goal.clone(), key),
                Idem {
                    job: id.clone(),
                    payload: job.payload.clone(),
                    expires_ms,
                },
            );
        }
        self.place(&id, &job);
        self.live.insert(id.clone(), job);
        Ok(wire::published(&id, false))
    }

    /// The best ready job whose goal `pattern` matches: the heads of the
    /// matching goals' queues compared.
    fn first_ready(&self, pattern: &str) -> Option<Arc<str>> {
        if crate::subject::is_literal(pattern) {
            return self
                .ready
                .get(pattern)?
                .first()
                .map(|(_, _, id)| id.clone());
        }
        self.ready
            .iter()
            .filter(|(goal, _)| crate::subject::matches(pattern, goal))
            .filter_map(|(_, queue)| queue.first())
            .min()
            .map(|(_, _, id)| id.clone())
    }

    fn lease(
        &mut self,
        tx: &Transaction,
        id: &Arc<str>,
        lease_ms: u64,
        session: SessionKey,
        now: u64,
    ) -> rusqlite::Result<Bytes> {
        let Some(mut job) = self.live.remove(id) else {
            return Ok(wire::not_found(id));
        };
        self.unplace(id, &job);
        job.attempt += 1;
        let token: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        let until_ms = now + lease_ms;
        job.lease = Some(Lease {
            token: token.clone(),
            until_ms,
            holder: Some(session),
        });
        save(tx, id, &job)?;
        let frame = wire::claimed(id, &job.goal, &job.payload, job.attempt, &token, until_ms);
        self.place(id, &job);
        self.live.insert(id.clone(), job);
        Ok(frame)
    }

    /// The live job `id` if `lease` is its current lease (taken out of `live`:
    /// the caller puts it back or finishes it).
    fn leased(&mut self, id: &Arc<str>, lease: &str) -> Option<Live> {
        let ok = self
            .live
            .get(id)
            .and_then(|j| j.lease.as_ref())
            .is_some_and(|l| &*l.token == lease);
        if !ok {
            return None;
        }
        self.live.remove(id)
    }

    /// Requeues a job whose attempt failed, after its backoff, or makes it
    /// dead when it had its last attempt. Returns its new state and when it
    /// is ready again.
    fn requeue_or_dead(
        &mut self,
        tx: &Transaction,
        id: &Arc<str>,
        mut job: Live,
        reason: &str,
        now: u64,
        out: &mut Out,
    ) -> rusqlite::Result<(JobState, Option<u64>)> {
        self.unplace(id, &job);
        if job.attempt >= job.max_attempts {
            self.dead(tx, id, &job, reason, now, out)?;
            return Ok((JobState::Dead, None));
        }
        let exp = job.attempt.saturating_sub(1).min(20);
        let backoff = (job.backoff_ms.saturating_mul(1 << exp) as f64 * jitter()) as u64;
        job.ready_at_ms = now + backoff;
        job.lease = None;
        self.seq += 1;
        job.seq = self.seq;
        save(tx, id, &job)?;
        tx.prepare_cached("UPDATE jobs SET error = ?2 WHERE id = ?1")?
            .execute(params![&**id, reason])?;
        let ready_at = job.ready_at_ms;
        self.place(id, &job);
        self.live.insert(id.clone(), job);
        Ok((JobState::Queued, Some(ready_at)))
    }

    fn dead(
        &mut self,
        tx: &Transaction,
        id: &Arc<str>,
        job: &Live,
        reason: &str,
        now: u64,
        out: &mut Out,
    ) -> rusqlite::Result<()> {
        self.finish(tx, id, job, JobState::Dead, None, Some(reason), now)?;
        let body =
            json!({"job": &**id, "goal": &*job.goal, "attempt": job.attempt, "error": reason});
        out.events.push((
            format!("$jobs.{}.dead", job.goal),
            Bytes::from(body.to_string()),
        ));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        tx: &Transaction,
        id: &Arc<str>,
        job: &Live,
        state: JobState,
        result: Option<&[u8]>,
        error: Option<&str>,
        now: u64,
    ) -> rusqlite::Result<()> {
        self.unplace(id, job);
        self.live.remove(id);
        tx.prepare_cached(
            "UPDATE jobs SET state = ?2, attempt = ?3, lease = NULL, lease_until_ms = NULL,
                             result = ?4, error = ?5, finished_ms = ?6 WHERE id = ?1",
        )?
        .execute(params![
            &**id,
            state.name(),
            job.attempt,
            result,
            error,
            now as i64
        ])?;
        Ok(())
    }

    fn status(&self, tx: &Transaction, id: &str) -> rusqlite::Result<Bytes> {
        Ok(match read_info(tx, id)? {
            Some(row) => wire::info(&row.info()),
            None => wire::not_found(id),
        })
    }

    fn list(
        &self,
        tx: &Transaction,
        state: Option<JobState>,
        pattern: Option<&str>,
        limit: usize,
    ) -> rusqlite::Result<Bytes> {
        // Both orders are served by an index; a goal pattern is matched here,
        // over at most LIST_SCAN rows, so one list cannot hold the store long.
        let sql = match state {
            Some(_) => format!(
                "SELECT {INFO_COLUMNS} FROM jobs WHERE state = ?1 ORDER BY created_ms, id LIMIT ?2"
            ),
            None => format!(
                "SELECT {INFO_COLUMNS} FROM jobs WHERE ?1 IS NULL ORDER BY created_ms, id LIMIT ?2"
            ),
        };
        let mut stmt = tx.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![state.map(JobState::name), LIST_SCAN as i64 + 1])?;
        let (mut found, mut bytes, mut scanned, mut more) = (Vec::new(), 0usize, 0usize, false);
        while let Some(r) = rows.next()? {
            scanned += 1;
            if scanned > LIST_SCAN {
                more = true;
                break;
            }
            let row = InfoRow::read(r)?;
            if pattern.is_some_and(|p| !crate::subject::matches(p, &row.goal)) {
                continue;
            }
            // The answer stays well within a frame, whatever the payloads.
            bytes += 256
                + row.payload.len()
                + row.result.as_ref().map_or(0, Vec::len)
                + row.error.as_ref().map_or(0, String::len);
            if found.len() == limit || bytes > LIST_BYTES {
                more = true;
                break;
            }
            found.push(row);
        }
        let infos: Vec<JobInfo<'_>> = found.iter().map(InfoRow::info).collect();
        Ok(wire::list(&infos, more))
    }

    fn retry(&mut self, tx: &Transaction, id: &Arc<str>, now: u64) -> rusqlite::Result<Bytes> {
        let Some(row) = read_info(tx, id)? else {
            return Ok(wire::not_found(id));
        };
        if !matches!(row.state, JobState::Dead | JobState::Cancelled) {
            return Ok(error(
                ErrorCode::BadRequest,
                format!(
                    "job {id} is {}: only dead or cancelled jobs are retried",
                    row.state.name()
                ),
            ));
        }
        let (priority, max_attempts, backoff_ms): (i64, i64, i64) = tx.query_row(
            "SELECT priority, max_attempts, backoff_ms FROM jobs WHERE id = ?1",
            [&**id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        self.seq += 1;
        let job = Live {
            goal: row.goal.as_str().into(),
            payload: Bytes::from(row.payload),
            priority,
            attempt: 0,
            max_attempts: max_attempts as u32,
            backoff_ms: backoff_ms as u64,
            ready_at_ms: now,
            lease: None,
            seq: self.seq,
        };
        tx.prepare_cached(
            "UPDATE jobs SET state = 'queued', attempt = 0, ready_at_ms = ?2, error = NULL,
                             result = NULL, finished_ms = NULL WHERE id = ?1",
        )?
        .execute(params![&**id, now as i64])?;
        self.place(id, &job);
        self.live.insert(id.clone(), job);
        Ok(wire::about("job_retried", id, json!({})))
    }

    fn cancel(&mut self, tx: &Transaction, id: &Arc<str>, now: u64) -> rusqlite::Result<Bytes> {
        if let Some(job) = self.live.get(id).cloned() {
            self.finish(tx, id, &job, JobState::Cancelled, None, None, now)?;
            return Ok(wire::about("job_cancelled", id, json!({})));
        }
        let Some(row) = read_info(tx, id)? else {
            return Ok(wire::not_found(id));
        };
        if row.state != JobState::Dead {
            return Ok(error(
                ErrorCode::BadRequest,
                format!("job {id} is {} already", row.state.name()),
            ));
        }
        tx.prepare_cached("UPDATE jobs SET state = 'cancelled', finished_ms = ?2 WHERE id = ?1")?
            .execute(params![&**id, now as i64])?;
        Ok(wire::about("job_cancelled", id, json!({})))
    }

    /// Leases held by a session that closed are given up: each job is
    /// requeued (or dead), as when its lease expires. Its waiting claims go.
    pub fn session_closed(
        &mut self,
        tx: &Transaction,
        session: SessionKey,
        now: u64,
        out: &mut Out,
    ) -> rusqlite::Result<()> {
        self.waiting.retain(|w| w.session != session);
        let held: Vec<Arc<str>> = self
            .live
            .iter()
            .filter(|(_, j)| j.lease.as_ref().is_some_and(|l| l.holder == Some(session)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in held {
            if let Some(job) = self.live.remove(&id) {
                self.requeue_or_dead(tx, &id, job, "the worker's connection closed", now, out)?;
            }
        }
        Ok(())
    }

    /// Timers that are due, then claims waiting for work.
    pub fn tick(&mut self, tx: &Transaction, now: u64, out: &mut Out) -> rusqlite::Result<()> {
        while let Some((at, id)) = self.delayed.first().cloned() {
            if at > now {
                break;
            }
            self.delayed.remove(&(at, id.clone()));
            if let Some(job) = self.live.get(&id).cloned() {
                self.make_ready(&id, &job);
            }
        }
        while let Some((at, id)) = self.leases.first().cloned() {
            if at > now {
                break;
            }
            self.leases.remove(&(at, id.clone()));
            let current = self
                .live
                .get(&id)
                .and_then(|j| j.lease.as_ref())
                .is_some_and(|l| l.until_ms == at);
            if current {
                if let Some(job) = self.live.remove(&id) {
                    self.requeue_or_dead(tx, &id, job, "its lease expired", now, out)?;
                }
            }
        }
        // Waiting claims are looked at when a job became ready or one's wait ends.
        let due = self.waiting.iter().any(|w| w.deadline_ms <= now);
        if !std::mem::take(&mut self.readied) && !due {
            return self.maybe_cleanup(tx, now);
        }
        let mut still = VecDeque::with_capacity(self.waiting.len());
        while let Some(w) = self.waiting.pop_front() {
            if let Some(id) = self.first_ready(&w.pattern) {
                let frame = self.lease(tx, &id, w.lease_ms, w.session, now)?;
                out.answers.push((w.session, w.rid, frame));
            } else if w.deadline_ms <= now {
                out.answers.push((w.session, w.rid, wire::no_job()));
            } else {
                still.push_back(w);
            }
        }
        self.waiting = still;
        self.maybe_cleanup(tx, now)
    }

    fn maybe_cleanup(&mut self, tx: &Transaction, now: u64) -> rusqlite::Result<()> {
        if now >= self.next_cleanup_ms {
            if self.next_cleanup_ms > 0 {
                self.cleanup(tx, now)?;
            }
            self.next_cleanup_ms = now + CLEANUP_EVERY_MS;
        }
        Ok(())
    }

    fn cleanup(&mut self, tx: &Transaction, now: u64) -> rusqlite::Result<()> {
        let before = now.saturating_sub(self.config.retention_ms) as i64;
        tx.prepare_cached(
            "DELETE FROM jobs WHERE state IN ('done', 'dead', 'cancelled') AND finished_ms < ?1",
        )?
        .execute([before])?;
        tx.prepare_cached(
            "UPDATE jobs SET idem_key = NULL, idem_expires_ms = NULL
             WHERE idem_key IS NOT NULL AND idem_expires_ms <= ?1",
        )?
        .execute([now as i64])?;
        self.idem.retain(|_, i| i.expires_ms > now);
        Ok(())
    }
}

/// Writes the fields a live job's life changes.
fn save(tx: &Transaction, id: &str, job: &Live) -> rusqlite::Result<()> {
    let (state, lease, until) = match &job.lease {
        Some(l) => ("leased", Some(&*l.token), Some(l.until_ms as i64)),
        None => ("queued", None, None),
    };
    tx.prepare_cached(
        "UPDATE jobs SET state = ?2, attempt = ?3, ready_at_ms = ?4, lease = ?5, lease_until_ms = ?6
         WHERE id = ?1",
    )?
    .execute(params![id, state, job.attempt, job.ready_at_ms as i64, lease, until])?;
    Ok(())
}

const INFO_COLUMNS: &str = "id, goal, payload, state, attempt, max_attempts, priority, created_ms,
     ready_at_ms, lease_until_ms, result, error, finished_ms";

/// A job as the table holds it.
struct InfoRow {
    id: String,
    goal: String,
    payload: Vec<u8>,
    state: JobState,
    attempt: u32,
    max_attempts: u32,
    priority: i64,
    created_ms: u64,
    ready_at_ms: u64,
    lease_until_ms: Option<u64>,
    result: Option<Vec<u8>>,
    error: Option<String>,
    finished_ms: Option<u64>,
}

impl InfoRow {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(InfoRow {
            id: r.get(0)?,
            goal: r.get(1)?,
            payload: r.get(2)?,
            state: JobState::from_name(&r.get::<_, String>(3)?).unwrap_or(JobState::Dead),
            attempt: r.get::<_, i64>(4)? as u32,
            max_attempts: r.get::<_, i64>(5)? as u32,
            priority: r.get(6)?,
            created_ms: r.get::<_, i64>(7)? as u64,
            ready_at_ms: r.get::<_, i64>(8)? as u64,
            lease_until_ms: r.get::<_, Option<i64>>(9)?.map(|t| t as u64),
            result: r.get(10)?,
            error: r.get(11)?,
            finished_ms: r.get::<_, Option<i64>>(12)?.map(|t| t as u64),
        })
    }

    fn info(&self) -> JobInfo<'_> {
        JobInfo {
            job: &self.id,
            goal: &self.goal,
            state: self.state,
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            priority: self.priority,
            payload: wire::raw(&self.payload),
            created_ms: self.created_ms,
            ready_at_ms: (self.state == JobState::Queued).then_some(self.ready_at_ms),
            lease_until_ms: self.lease_until_ms,
            result: self.result.as_deref().and_then(wire::raw),
            error: self.error.as_deref(),
            finished_ms: self.finished_ms,
        }
    }
}

fn read_info(tx: &Transaction, id: &str) -> rusqlite::Result<Option<InfoRow>> {
    tx.prepare_cached(&format!("SELECT {INFO_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row([id], InfoRow::read)
        .optional()
}
