"""Errors: one exception class per error code of the hookbus protocol."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Type


class HookbusError(Exception):
    """An error frame from the bus, or a failure in the client.

    `code` is the protocol's error code, `detail` its text and `frame` the error
    frame itself (None for errors raised by the client).
    """

    code: str = "error"

    def __init__(self, detail: str = "", *, code: Optional[str] = None,
                 frame: Optional[Mapping[str, Any]] = None) -> None:
        if code is not None:
            self.code = code
        self.detail = detail
        self.frame: Optional[Dict[str, Any]] = dict(frame) if frame is not None else None
        super().__init__(f"{self.code}: {detail}" if detail else self.code)


class FrameTooLarge(HookbusError):
    """A frame is over the frame limit."""

    code = "frame_too_large"


class BadFrame(HookbusError):
    """A payload is not UTF-8, not JSON, or not a JSON object."""

    code = "bad_frame"


class UnknownType(HookbusError):
    """The bus does not know the request's type."""

    code = "unknown_type"


class BadRequest(HookbusError):
    """A field is missing or mistyped; the detail names it."""

    code = "bad_request"


class EndpointNotFound(HookbusError):
    """`to` names no registered endpoint."""

    code = "endpoint_not_found"


class AlreadyRegistered(HookbusError):
    """The connection is registered already."""

    code = "already_registered"


class Replaced(HookbusError):
    """Another connection registered this endpoint; this one is closed."""

    code = "replaced"


class HeartbeatTimeout(HookbusError):
    """The connection was silent past the heartbeat timeout."""

    code = "heartbeat_timeout"


class FrameTimeout(HookbusError):
    """A frame was not finished within the frame timeout."""

    code = "frame_timeout"


class SlowConsumer(HookbusError):
    """The client read nothing for the slow-consumer timeout."""

    code = "slow_consumer"


class PermissionDenied(HookbusError):
    """The peer's uid may not connect, or may not monitor."""

    code = "permission_denied"


class TooManyConnections(HookbusError):
    """The bus is at its connection limit."""

    code = "too_many_connections"


class ShuttingDown(HookbusError):
    """The daemon is stopping."""

    code = "shutting_down"


class NotNegotiated(HookbusError):
    """The request needs a feature this session does not have."""

    code = "not_negotiated"


class BadSubject(HookbusError):
    """A subject or pattern breaks the subject rules."""

    code = "bad_subject"


class TooManySubscriptions(HookbusError):
    """The session or the bus has too many subscriptions."""

    code = "too_many_subscriptions"


class NoSuchSubscription(HookbusError):
    """No subscription has this `sid`."""

    code = "no_such_subscription"


class RetainedFull(HookbusError):
    """A retained publish was delivered live but not kept."""

    code = "retained_full"


class NoResponders(HookbusError):
    """Nothing matches the request."""

    code = "no_responders"


class Timeout(HookbusError, TimeoutError):
    """No answer came in time (from the bus, or waited for locally)."""

    code = "timeout"


class ResponderGone(HookbusError):
    """Every responder left without answering."""

    code = "responder_gone"


class Dropped(HookbusError):
    """A filter hook dropped the request."""

    code = "dropped"


class TooManyRequests(HookbusError):
    """Too many requests pending on one connection."""

    code = "too_many_requests"


class StorageUnavailable(HookbusError):
    """The store cannot write (disk full, I/O error), is too far behind, or the bus has
    none: nothing was stored."""

    code = "storage_unavailable"


class RevisionMismatch(HookbusError):
    """A KV write's `if_revision` did not hold.

    `revision` is the key's current revision (0: the key does not exist), from the
    error frame.
    """

    code = "revision_mismatch"

    def __init__(self, detail: str = "", *, code: Optional[str] = None,
                 frame: Optional[Mapping[str, Any]] = None,
                 revision: Optional[int] = None) -> None:
        super().__init__(detail, code=code, frame=frame)
        if revision is None and frame is not None and frame.get("revision") is not None:
            revision = int(frame["revision"])
        #: The key's current revision (0: absent); None if the bus did not say.
        self.revision: Optional[int] = revision


class NotFound(HookbusError):
    """No such KV key, job, stream or durable consumer, or a `stream_ack` of a message
    that is not pending."""

    code = "not_found"


class BadKey(HookbusError):
    """A KV key or pattern breaks the rules of subjects."""

    code = "bad_key"


class ValueTooLarge(HookbusError):
    """A KV value, job payload, result or error is over 1 MiB of JSON."""

    code = "value_too_large"


class KvFull(HookbusError):
    """The KV holds the most keys or bytes it may."""

    code = "kv_full"


class LeaseLost(HookbusError):
    """The job's lease is not this one any more (it expired, the job was requeued,
    finished or cancelled): stop working on the job."""

    code = "lease_lost"


class IdempotencyConflict(HookbusError):
    """A `job_publish` reused an idempotency key with another payload."""

    code = "idempotency_conflict"


class SnapshotTooLarge(HookbusError):
    """A `kv_watch` matches too many current values to send at once."""

    code = "snapshot_too_large"


class SeqGone(HookbusError):
    """A `replay` (or a new consumer's `from`) starts at a message its stream no longer
    keeps: trimmed, or an `id` never stored; the detail says the first kept."""

    code = "seq_gone"


class ConsumerBusy(HookbusError):
    """Another connection consumes this durable consumer (`consume`, `consumer_delete`);
    it is free once that one closes or unconsumes."""

    code = "consumer_busy"


class Closed(HookbusError):
    """The connection, or the subscription or stream read from, has ended.

    A client-side code: the bus never sends it.
    """

    code = "closed"


class WatchLost(Closed):
    """The bus ended a KV watch because its reader fell behind (`kv_unwatched` with a
    `reason`); `frame` is that frame. Watch again for the current values.

    A client-side code: the bus never sends it as an error.
    """

    code = "watch_lost"


_BY_CODE: Dict[str, Type[HookbusError]] = {
    cls.code: cls
    for cls in (
        FrameTooLarge,
        BadFrame,
        UnknownType,
        BadRequest,
        EndpointNotFound,
        AlreadyRegistered,
        Replaced,
        HeartbeatTimeout,
        FrameTimeout,
        SlowConsumer,
        PermissionDenied,
        TooManyConnections,
        ShuttingDown,
        NotNegotiated,
        BadSubject,
        TooManySubscriptions,
        NoSuchSubscription,
        RetainedFull,
        NoResponders,
        Timeout,
        ResponderGone,
        Dropped,
        TooManyRequests,
        StorageUnavailable,
        RevisionMismatch,
        NotFound,
        BadKey,
        ValueTooLarge,
        KvFull,
        LeaseLost,
        IdempotencyConflict,
        SnapshotTooLarge,
        SeqGone,
        ConsumerBusy,
        Closed,
        WatchLost,
    )
}


def error_class(code: str) -> Type[HookbusError]:
    """The class for an error code; `HookbusError` for a code this client does not know."""
    return _BY_CODE.get(code, HookbusError)


def error_from_frame(frame: Mapping[str, Any]) -> HookbusError:
    """The exception for an `{"type":"error",...}` frame."""
    code = str(frame.get("code") or "error")
    detail = frame.get("detail")
    return error_class(code)("" if detail is None else str(detail), code=code, frame=frame)
