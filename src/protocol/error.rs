//! The errors a request gets: `{"type":"error","code":…,"detail":…}`.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::{MsgId, Rid};
use crate::frame;

/// Error codes sent in `{"type":"error","code":…}` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A length prefix over the limit; the connection is closed after this frame.
    FrameTooLarge,
    /// Not UTF-8, not JSON, or not a JSON object.
    BadFrame,
    /// A `type` this server does not know.
    UnknownType,
    /// A missing or mistyped field.
    BadRequest,
    /// `to` names no registered endpoint.
    EndpointNotFound,
    /// The connection is registered already.
    AlreadyRegistered,
    /// Another connection registered this connection's endpoint name.
    Replaced,
    /// No ping or message within the heartbeat timeout.
    HeartbeatTimeout,
    /// The client read nothing for the stall timeout while messages waited for it.
    SlowConsumer,
    /// The peer runs as another user.
    PermissionDenied,
    /// The server is at its connection limit.
    TooManyConnections,
    /// The server is shutting down.
    ShuttingDown,
    /// The client stayed inside one frame longer than the frame timeout.
    FrameTimeout,
    /// A subject or pattern breaks the rules (protocol 2).
    BadSubject,
    /// A request type of a feature the session did not ask for in `hello`.
    NotNegotiated,
    /// `unsubscribe` or `uninterest` names nothing the session has.
    NoSuchSubscription,
    /// The session's or the bus's subscription limit is reached.
    TooManySubscriptions,
    /// The retained-value store is full; the publish was delivered, not kept.
    RetainedFull,
    /// A request matched no responder.
    NoResponders,
    /// No response came within the request's timeout.
    Timeout,
    /// Every responder left without answering.
    ResponderGone,
    /// A filter hook dropped the request.
    Dropped,
    /// The connection has the most pending requests it may have.
    TooManyRequests,
    /// The store cannot write (disk full, I/O error) or is too far behind:
    /// nothing was stored.
    StorageUnavailable,
    /// `if_revision` did not hold; the error's `revision` is the current one.
    RevisionMismatch,
    /// No such key.
    NotFound,
    /// A KV key or pattern breaks the rules.
    BadKey,
    /// A KV value over the limit.
    ValueTooLarge,
    /// The KV holds the most keys or bytes it may.
    KvFull,
    /// A job's lease is not the caller's any more (expired, requeued, finished).
    LeaseLost,
    /// An idempotency key was used with another payload.
    IdempotencyConflict,
    /// A `kv_watch` matches more current values than it may be sent at once.
    SnapshotTooLarge,
    /// A replay starts before the first message a stream still keeps.
    SeqGone,
    /// Another connection consumes this durable consumer.
    ConsumerBusy,
}

/// A protocol error, sent to the client as an error frame.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code:?}: {detail}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub detail: String,
    /// The `id` of the message this error is about, if any.
    pub id: Option<MsgId>,
    /// The `rid` of the request this error answers, if any.
    pub rid: Option<Rid>,
    /// For `revision_mismatch`: the key's current revision.
    pub revision: Option<u64>,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            id: None,
            rid: None,
            revision: None,
        }
    }

    /// This error as the answer to the request `rid`.
    pub fn answering(mut self, rid: Option<Rid>) -> Self {
        self.rid = rid;
        self
    }

    pub(crate) fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, detail)
    }

    /// The error frame sent to the client.
    pub fn to_frame(&self) -> Bytes {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            code: ErrorCode,
            detail: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<&'a RawValue>,
            #[serde(skip_serializing_if = "Option::is_none")]
            rid: Option<&'a RawValue>,
            #[serde(skip_serializing_if = "Option::is_none")]
            revision: Option<u64>,
        }
        let rid = self
            .rid
            .as_ref()
            .and_then(|r| serde_json::from_str::<&RawValue>(&r.0).ok());
        frame::encode_json(&Wire {
            kind: "error",
            code: self.code,
            detail: &self.detail,
            id: self.id.as_ref().map(MsgId::raw),
            rid,
            revision: self.revision,
        })
    }
}
