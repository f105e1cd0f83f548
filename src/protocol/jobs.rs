//! Feature `jobs`: work handed to workers with leases, at least once
//! (intent-bus semantics). `job_publish`, `job_claim`, `job_extend`,
//! `job_fulfill`, `job_fail`, `job_status`, `job_list`, `job_retry`,
//! `job_cancel`, and the frames that answer them.
//!
//! Each job frame is read into its own typed struct from the frame's text
//! (jobs are not the hot path; serde names a mistyped field).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::envelope::bad_subject;
use super::envelope::slice_of;
use super::{ErrorCode, Head, Op, ProtocolError};
use crate::frame;
use crate::subject;

/// Defaults, from intent-bus.
pub const DEFAULT_LEASE_MS: u64 = 60_000;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const DEFAULT_BACKOFF_MS: u64 = 5_000;

/// Longest lease, delay, backoff and claim wait.
pub const MAX_LEASE_MS: u64 = 24 * 3600 * 1000;
pub const MAX_DELAY_MS: u64 = 30 * 24 * 3600 * 1000;
pub const MAX_WAIT_MS: u64 = 300_000;

/// Most attempts a job may ask for.
pub const MAX_ATTEMPTS: u32 = 100;

/// Largest payload, result or error, in bytes of JSON.
pub const MAX_PAYLOAD_LEN: usize = 1024 * 1024;

/// Longest idempotency key.
pub const MAX_KEY_LEN: usize = 256;

/// Most jobs one `job_list` returns.
pub const MAX_LIST: usize = 1000;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Leased,
    Done,
    Dead,
    Cancelled,
}

impl JobState {
    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Leased => "leased",
            JobState::Done => "done",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [
            JobState::Queued,
            JobState::Leased,
            JobState::Done,
            JobState::Dead,
            JobState::Cancelled,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub goal: Arc<str>,
    /// JSON text.
    pub payload: Bytes,
    pub idempotency_key: Option<Arc<str>>,
    pub priority: i64,
    pub delay_ms: u64,
    pub max_attempts: u32,
    pub backoff_ms: u64,
}

#[derive(Debug)]
pub enum JobOp {
    Publish(NewJob),
    Claim {
        pattern: Box<str>,
        lease_ms: u64,
        wait_ms: u64,
    },
    Extend {
        job: Arc<str>,
        lease: Box<str>,
        lease_ms: u64,
    },
    Fulfill {
        job: Arc<str>,
        lease: Box<str>,
        result: Option<Bytes>,
    },
    Fail {
        job: Arc<str>,
        lease: Box<str>,
        error: Option<String>,
        retry: bool,
    },
    Status {
        job: Arc<str>,
    },
    List {
        state: Option<JobState>,
        pattern: Option<Box<str>>,
        limit: usize,
    },
    Retry {
        job: Arc<str>,
    },
    Cancel {
        job: Arc<str>,
    },
}

impl JobOp {
    /// The goal a filter hook matches on, for a publish.
    pub fn goal(&self) -> Option<&str> {
        match self {
            JobOp::Publish(j) => Some(&j.goal),
            _ => None,
        }
    }
}

/// A `job_publish` and the frame it came in (what filter hooks see).
#[derive(Debug)]
pub struct Job {
    pub op: JobOp,
    pub frame: Bytes,
}

fn read<'a, T: Deserialize<'a>>(text: &'a str, kind: &str) -> Result<T, ProtocolError> {
    serde_json::from_str(text)
        .map_err(|e| ProtocolError::bad_request(format!("invalid `{kind}`: {e}")))
}

fn job_op(op: JobOp, frame: &Bytes) -> Result<Op, ProtocolError> {
    Ok(Op::Job(Box::new(Job {
        op,
        frame: frame.clone(),
    })))
}

fn goal(goal: &str, pattern: bool) -> Result<(), ProtocolError> {
    if pattern {
        subject::check_pattern(goal).map_err(bad_subject)
    } else {
        subject::check_subject(goal).map_err(bad_subject)
    }
}

fn bounded(value: u64, max: u64, field: &str) -> Result<u64, ProtocolError> {
    if value > max {
        return Err(ProtocolError::bad_request(format!(
            "field `{field}` must be at most {max}"
        )));
    }
    Ok(value)
}

fn json_len(raw: &RawValue, field: &str) -> Result<(), ProtocolError> {
    if raw.get().len() > MAX_PAYLOAD_LEN {
        return Err(ProtocolError::new(
            ErrorCode::ValueTooLarge,
            format!("`{field}` has at most {MAX_PAYLOAD_LEN} bytes of JSON"),
        ));
    }
    Ok(())
}

pub(super) fn parse_publish(_: &Head<'_>, text: &str, frame: &Bytes) -> Result<Op, ProtocolError> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        #[serde(borrow)]
        goal: Cow<'a, str>,
        #[serde(borrow)]
        payload: Option<&'a RawValue>,
        #[serde(borrow)]
        idempotency_key: Option<Cow<'a, str>>,
        #[serde(default)]
        priority: i64,
        #[serde(default)]
        delay_ms: u64,
        max_attempts: Option<u32>,
        backoff_ms: Option<u64>,
    }
    let w: Wire = read(text, "job_publish")?;
    goal(&w.goal, false)?;
    let payload = match w.payload {
        Some(p) => {
            json_len(p, "payload")?;
            super::portable(p, "payload")?;
            slice_of(frame, text, p)
        }
        None => Bytes::from_static(b"null"),
    };
    if let Some(k) = &w.idempotency_key {
        if k.is_empty() || k.len() > MAX_KEY_LEN {
            return Err(ProtocolError::bad_request(format!(
                "field `idempotency_key` must be 1 to {MAX_KEY_LEN} bytes"
            )));
        }
    }
    let max_attempts = w.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if max_attempts == 0 || max_attempts > MAX_ATTEMPTS {
        return Err(ProtocolError::bad_request(format!(
            "field `max_attempts` must be 1 to {MAX_ATTEMPTS}"
        )));
    }
    job_op(
        JobOp::Publish(NewJob {
            goal: w.goal.into(),
            payload,
            idempotency_key: w.idempotency_key.as_deref().map(Arc::from),
            priority: w.priority,
            delay_ms: bounded(w.delay_ms, MAX_DELAY_MS, "delay_ms")?,
            max_attempts,
            backoff_ms: bounded(
                w.backoff_ms.unwrap_or(DEFAULT_BACKOFF_MS),
                MAX_DELAY_MS,
                "backoff_ms",
            )?,
        }),
        frame,
    )
}

pub(super) fn parse_claim(_: &Head<'_>, text: &str, frame: &Bytes) -> Result<Op, ProtocolError> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        #[serde(borrow)]
        goal: Cow<'a, str>,
        lease_ms: Option<u64>,
        #[serde(default)]
        wait_ms: u64,
    }
    let w: Wire = read(text, "job_claim")?;
    goal(&w.goal, true)?;
    let lease_ms = w.lease_ms.unwrap_or(DEFAULT_LEASE_MS);
    if lease_ms == 0 {
        return Err(ProtocolError::bad_request(
            "field `lease_ms` must be over 0",
        ));
    }
    job_op(
        JobOp::Claim {
            pattern: w.goal.into(),
            lease_ms: bounded(lease_ms, MAX_LEASE_MS, "lease_ms")?,
            wait_ms: bounded(w.wait_ms, MAX_WAIT_MS, "wait_ms")?,
        },
        frame,
    )
}

#[derive(Deserialize)]
struct Leased<'a> {
    #[serde(borrow)]
    job: Cow<'a, str>,
    #[serde(borrow)]
    lease: Cow<'a, str>,
}

pub(super) fn parse_extend(_: &Head<'_>, text: &str, frame: &Bytes) -> Result<Op, ProtocolError> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        #[serde(borrow, flatten)]
        leased: Leased<'a>,
        lease_ms: Option<u64>,
    }
    let w: Wire = read(text, "job_extend")?;
    let lease_ms = w.lease_ms.unwrap_or(DEFAULT_LEASE_MS);
    if lease_ms == 0 {
        return Err(ProtocolError::bad_request(
            "field `lease_ms` must be over 0",
        ));
    }
    job_op(
        JobOp::Extend {
            job: w.leased.job.into(),
            lease: w.leased.lease.into(),
            lease_ms: bounded(lease_ms, MAX_LEASE_MS, "lease_ms")?,
        },
        frame,
    )
}

pub(super) fn parse_fulfill(_: &Head<'_>, text: &str, frame: &Bytes) -> Result<Op, ProtocolError> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        #[serde(borrow)]
        job: Cow<'a, str>,
        #[serde(borrow)]
        lease: Cow<'a, str>,
        #[serde(borrow)]
        result: Option<&'a RawValue>,
    }
    let w: Wire = read(text, "job_fulfill")?;
    let result = match w.result {
        Some(r) => {
            json_len(r, "result")?;
            super::portable(r, "result")?;
            Some(slice_of(frame, text, r))
        }
        None => None,
    };
    job_op(
        JobOp::Fulfill {
            job: w.job.into(),
            lease: w.lease.into(),
            result,
        },
        frame,
    )
}

pub(super) fn parse_fail(_: &Head<'_>, text: &str, frame: &Bytes) -> Result<Op, ProtocolError> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        #[serde(borrow)]
        job: Cow<'a, str>,
        #[serde(borrow)]
        lease: Cow<'a, str>,
        error: Option<String>,
        retry: Option<bool>,
    }
    let w: Wire = read(text, "job_fail")?;
    if w.error.as_ref().is_some_and(|e| e.len() > MAX_PAYLOAD_LEN) {
        return Err(ProtocolError::new(
            ErrorCode::ValueTooLarge,
            format!("`error` has at most {MAX_PAYLOAD_LEN} bytes"),
        ));
    }
    job_op(
        JobOp::Fail {
            job: w.job.into(),
            lease: w.lease.into(),
            error: w.error,
            retry: w.retry.unwrap_or(true),
        },
        frame,
    )
}

#[derive(Deserialize)]
struct ById<'a> {
    #[serde(borrow)]
    job: Cow<'a, str>,
}

pub(super) fn parse_status(_: &Head<'_>, text: &str, frame: &Bytes) -> Result<Op, ProtocolError> {
    let w: ById = read(text, "job_status")?;
    job_op(JobOp::Status { job: w.job.into() }, frame)
}

pub(super) fn parse_retry(_: &Head<'_>, text: &str, frame: &Bytes) -> Result<Op, ProtocolError> {
    let w: ById = read(text, "job_retry")?;
    job_op(JobOp::Retry { job: w.job.into() }, frame)
}

pub(super) fn parse_cancel(_: &Head<'_>, text: &str, frame: &Bytes) -> Result<Op, ProtocolError> {
    let w: ById = read(text, "job_cancel")?;
    job_op(JobOp::Cancel { job: w.job.into() }, frame)
}

pub(super) fn parse_list(_: &Head<'_>, text: &str, frame: &Bytes) -> Result<Op, ProtocolError> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        #[serde(borrow)]
        state: Option<Cow<'a, str>>,
        #[serde(borrow)]
        goal: Option<Cow<'a, str>>,
        limit: Option<usize>,
    }
    let w: Wire = read(text, "job_list")?;
    let state = match w.state {
        None => None,
        Some(s) => Some(JobState::from_name(&s).ok_or_else(|| {
            ProtocolError::bad_request(
                "field `state` must be queued, leased, done, dead or cancelled",
            )
        })?),
    };
    if let Some(g) = &w.goal {
        goal(g.as_ref(), true)?;
    }
    job_op(
        JobOp::List {
            state,
            pattern: w.goal.as_deref().map(Into::into),
            limit: w.limit.unwrap_or(100).clamp(1, MAX_LIST),
        },
        frame,
    )
}

/// A job as `job_status` and `job_list` describe it.
#[derive(Debug, Clone, Serialize)]
pub struct JobInfo<'a> {
    pub job: &'a str,
    pub goal: &'a str,
    pub state: JobState,
    pub attempt: u32,
    pub max_attempts: u32,
    pub priority: i64,
    pub payload: Option<&'a RawValue>,
    pub created_ms: u64,
    /// When a queued job may be claimed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_until_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
}

/// JSON text the bus stored, as a raw value (it was parsed when it came in).
pub fn raw(json: &[u8]) -> Option<&RawValue> {
    std::str::from_utf8(json)
        .ok()
        .and_then(|t| serde_json::from_str(t).ok())
}

pub fn published(job: &str, duplicate: bool) -> Bytes {
    frame::encode_json(
        &serde_json::json!({"type": "job_published", "job": job, "duplicate": duplicate}),
    )
}

/// `{"type":"job","job":…,"goal":…,"payload":…,"attempt":n,"lease":…,"lease_until_ms":t}`
pub fn claimed(
    job: &str,
    goal: &str,
    payload: &[u8],
    attempt: u32,
    lease: &str,
    until_ms: u64,
) -> Bytes {
    #[derive(Serialize)]
    struct Wire<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        job: &'a str,
        goal: &'a str,
        payload: Option<&'a RawValue>,
        attempt: u32,
        lease: &'a str,
        lease_until_ms: u64,
    }
    frame::encode_json(&Wire {
        kind: "job",
        job,
        goal,
        payload: raw(payload),
        attempt,
        lease,
        lease_until_ms: until_ms,
    })
}

pub fn no_job() -> Bytes {
    frame::encode(br#"{"type":"no_job"}"#)
}

/// `{"type":T,"job":…}` plus `extra` fields.
pub fn about(kind: &str, job: &str, extra: serde_json::Value) -> Bytes {
    let mut v = serde_json::json!({"type": kind, "job": job});
    if let (Some(v), serde_json::Value::Object(extra)) = (v.as_object_mut(), extra) {
        v.extend(extra);
    }
    frame::encode_json(&v)
}

pub fn info(info: &JobInfo<'_>) -> Bytes {
    #[derive(Serialize)]
    struct Wire<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(flatten)]
        info: &'a JobInfo<'a>,
    }
    frame::encode_json(&Wire {
        kind: "job_info",
        info,
    })
}

/// `{"type":"job_list","jobs":[…],"more":bool}`: `more` when the list was cut
/// short (by `limit`, by size, or by how many jobs were looked through).
pub fn list(jobs: &[JobInfo<'_>], more: bool) -> Bytes {
    frame::encode_json(&serde_json::json!({"type": "job_list", "jobs": jobs, "more": more}))
}

pub fn lease_lost(job: &str) -> Bytes {
    ProtocolError::new(
        ErrorCode::LeaseLost,
        format!("job {job} is not leased to you under that lease any more (it expired, was requeued, or finished): stop working on it"),
    )
    .to_frame()
}

pub fn not_found(job: &str) -> Bytes {
    ProtocolError::new(ErrorCode::NotFound, format!("no job {job}")).to_frame()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse;

    fn op(json: &str) -> Result<JobOp, ProtocolError> {
        match parse(frame::encode(json.as_bytes())).op {
            Op::Job(j) => Ok(j.op),
            Op::Invalid(e) => Err(*e),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn strings_with_escapes_are_read_like_any_other() {
        let Ok(JobOp::Publish(j)) =
            op(r#"{"type":"job_publish","goal":"caf\u00e9.x","idempotency_key":"a\/b"}"#)
        else {
            panic!()
        };
        assert_eq!(
            (&*j.goal, j.idempotency_key.as_deref()),
            ("café.x", Some("a/b"))
        );
    }

    #[test]
    fn publish_fields_defaults_and_refusals() {
        let Ok(JobOp::Publish(j)) =
            op(r#"{"type":"job_publish","goal":"img.resize","payload":{"w":1}}"#)
        else {
            panic!()
        };
        assert_eq!(
            (
                &*j.goal,
                &j.payload[..],
                j.max_attempts,
                j.backoff_ms,
                j.priority
            ),
            ("img.resize", &br#"{"w":1}"#[..], 3, 5000, 0)
        );
        for (json, code) in [
            (
                r#"{"type":"job_publish","goal":"a.*"}"#,
                ErrorCode::BadSubject,
            ),
            (r#"{"type":"job_publish"}"#, ErrorCode::BadRequest),
            (
                r#"{"type":"job_publish","goal":"a","max_attempts":0}"#,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"type":"job_publish","goal":"a","priority":"high"}"#,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"type":"job_claim","goal":"a.>","lease_ms":0}"#,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"type":"job_claim","goal":"a.>","wait_ms":300001}"#,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"type":"job_list","state":"lost"}"#,
                ErrorCode::BadRequest,
            ),
            (r#"{"type":"job_fulfill","job":"x"}"#, ErrorCode::BadRequest),
        ] {
            assert_eq!(op(json).unwrap_err().code, code, "{json}");
        }
    }
}
