"""What the sync and asyncio clients share: paths, request frames, frame routing."""

from __future__ import annotations

import math
import os
import time
import uuid
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from .errors import BadRequest, NotNegotiated

#: The protocol version this client speaks.
PROTOCOL = 2
#: Features a `Client` asks for unless told otherwise (a bus ignores those it does not
#: know, and `kv`, `jobs` and `streams` send nothing a session did not ask for).
DEFAULT_FEATURES: Tuple[str, ...] = ("topics", "rpc", "kv", "jobs", "streams")
#: Seconds between heartbeat pings (the bus closes connections silent for 90 s).
HEARTBEAT_INTERVAL = 30.0
#: Extra seconds a client waits past a request's own timeout before giving up locally.
GRACE = 1.0
#: Longest `timeout_ms` the bus takes.
MAX_TIMEOUT_MS = 300_000
#: Longest `wait_ms` of a `job_claim`.
MAX_WAIT_MS = 300_000
ON_FULL = ("pause", "drop", "disconnect")

# The feature each request type needs.
FEATURE_OF = {
    "subscribe": "topics", "unsubscribe": "topics", "publish": "topics",
    "interest": "topics", "uninterest": "topics",
    "request": "rpc", "reply": "rpc",
    "monitor": "monitor",
    "kv_put": "kv", "kv_get": "kv", "kv_delete": "kv", "kv_keys": "kv",
    "kv_watch": "kv", "kv_unwatch": "kv",
    "job_publish": "jobs", "job_claim": "jobs", "job_extend": "jobs", "job_fulfill": "jobs",
    "job_fail": "jobs", "job_status": "jobs", "job_list": "jobs", "job_retry": "jobs",
    "job_cancel": "jobs",
    "replay": "streams", "stream_info": "streams", "stream_list": "streams",
    "consume": "streams", "stream_ack": "streams", "unconsume": "streams",
    "consumer_delete": "streams",
}

# The answer type of each request a protocol 1 bus knows. A protocol 1 bus does not
# echo `rid`, so its answers are matched to the oldest request waiting for that type.
LEGACY_ANSWERS = {
    "hello": "welcome", "register": "registered", "ping": "pong", "status": "status",
    "list_endpoints": "endpoints_list", "hooks_status": "hooks_status", "bye": "bye",
}

# Codes of errors after which the bus closes the connection.
FATAL_CODES = frozenset({
    "frame_too_large", "replaced", "heartbeat_timeout", "frame_timeout", "slow_consumer",
    "permission_denied", "too_many_connections", "shutting_down",
})

# Where `classify` sends a frame.
ANSWER = "answer"          # key: rid; the answer to one of our requests
SID = "sid"                # key: sid; event, gap, monitored, request to a subscription
IID = "iid"                # key: iid; interest_change
WID = "wid"                # key: wid; kv_change, kv_synced, kv_unwatched the bus chose
REPLAY = "replay"          # key: replay; a replay's stream_event, replay_end
CONSUMER = "consumer"      # key: (stream, durable); a durable consumer's stream_event
DIRECT_REQUEST = "direct"  # a request addressed to our endpoint with `to`
MESSAGE = "message"        # a point-to-point or broadcast message
PONG = "pong"              # a heartbeat answer (sent without rid)
UNSOLICITED = "error"      # an error frame that answers no request of ours
OTHER = "other"            # anything else (a newer bus's frame type)


def default_socket_path() -> str:
    """`$HOOKBUS_SOCKET`, else `$XDG_RUNTIME_DIR/hookbus/bus.sock`, else `~/.hookbus/bus.sock`."""
    env = os.environ.get("HOOKBUS_SOCKET")
    if env:
        return env
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "hookbus", "bus.sock")
    return os.path.join(os.path.expanduser("~"), ".hookbus", "bus.sock")


def classify(frame: Mapping[str, Any]) -> Tuple[str, Any]:
    """Where a frame from the bus goes: `(kind, key)`.

    Frames that are not answers are told apart by `type` before `rid` is looked
    at: a `message` keeps every field its sender put in it, `rid` included.
    """
    kind = frame.get("type")
    if kind in ("event", "gap", "monitored"):
        return SID, frame.get("sid")
    if kind == "request":
        sid = frame.get("sid")
        return (DIRECT_REQUEST, None) if sid is None else (SID, sid)
    if kind == "message":
        return MESSAGE, None
    if kind == "interest_change":
        return IID, frame.get("iid")
    if kind in ("kv_change", "kv_synced"):
        return WID, frame.get("wid")
    if kind == "stream_event":  # never an answer: a replayed message, or a consumer's
        if frame.get("replay") is not None:
            return REPLAY, frame.get("replay")
        return CONSUMER, (frame.get("stream"), frame.get("durable"))
    if kind == "replay_end":
        return REPLAY, frame.get("replay")
    if "rid" in frame:
        return ANSWER, frame["rid"]
    if kind == "kv_unwatched":  # without rid: not an answer to `kv_unwatch`, a lost watch
        return WID, frame.get("wid")
    if kind == "pong":
        return PONG, None
    if kind == "error":
        return UNSOLICITED, None
    return OTHER, None


def require(granted: Iterable[str], request_type: str) -> None:
    """Raises `NotNegotiated` when the session lacks the feature `request_type` needs."""
    feature = FEATURE_OF.get(request_type)
    if feature is not None and feature not in granted:
        raise NotNegotiated(
            f"`{request_type}` needs the `{feature}` feature, which this session did not get "
            f"(ask for it in `features`; a bus older than protocol 2 does not grant it)")


def timeout_ms(timeout: float) -> int:
    """A timeout in seconds as the bus's `timeout_ms` (more than 0, at most 300 s)."""
    ms = int(round(timeout * 1000))
    if not 0 < ms <= MAX_TIMEOUT_MS:
        raise ValueError(f"timeout must be more than 0 and at most {MAX_TIMEOUT_MS // 1000} s")
    return ms


def duration_ms(seconds: float, name: str, positive: bool = False,
                maximum_ms: Optional[int] = None) -> int:
    """A duration in seconds as the bus's milliseconds; `ValueError` if it is negative,
    not a number, 0 when `positive`, or over `maximum_ms`."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a number of seconds, 0 or more")
    ms = int(round(seconds * 1000))
    if positive and ms < 1:
        raise ValueError(f"{name} must be at least 1 ms")
    if maximum_ms is not None and ms > maximum_ms:
        raise ValueError(f"{name} must be at most {maximum_ms / 1000:g} s")
    return ms


def hello_frame(features: Iterable[str], will: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The `hello` frame, with its will checked and normalised."""
    frame: Dict[str, Any] = {"type": "hello", "protocol": PROTOCOL, "features": list(features)}
    if will is not None:
        subject = will.get("subject")
        if not isinstance(subject, str) or not subject:
            raise ValueError("a will needs a `subject`")
        frame["will"] = {"subject": subject, "body": will.get("body"),
                         "retain": bool(will.get("retain", False))}
    return frame


def message_frame(to: Optional[str], body: Any, sender: Optional[str]) -> Dict[str, Any]:
    """A hermes `message` with its own `id` and `ts`; `to` None broadcasts."""
    return {"type": "message", "to": to, "from": sender if sender is not None else "anonymous",
            "id": str(uuid.uuid4()), "ts": time.time(), "body": body}


def subscribe_frame(pattern: str, queue: Optional[str], on_full: str) -> Dict[str, Any]:
    """A `subscribe` frame (without rid)."""
    if on_full not in ON_FULL:
        raise ValueError(f"on_full must be one of {', '.join(ON_FULL)}")
    frame: Dict[str, Any] = {"type": "subscribe", "subject": pattern, "on_full": on_full}
    if queue is not None:
        frame["queue"] = queue
    return frame


def request_frame(subject: Optional[str], to: Optional[str], body: Any,
                  timeout: float) -> Dict[str, Any]:
    """A `request` frame (without rid) for a subject or an endpoint."""
    if (subject is None) == (to is None):
        raise ValueError("give exactly one of subject and to")
    frame: Dict[str, Any] = {"type": "request", "body": body, "timeout_ms": timeout_ms(timeout)}
    if subject is not None:
        frame["subject"] = subject
    else:
        frame["to"] = to
    return frame


def gather_frame(subject: str, body: Any, max: int, window: float,
                 timeout: Optional[float]) -> Dict[str, Any]:
    """A gathering `request` frame (without rid); its timeout defaults to the window."""
    if not 1 <= max <= 1024:
        raise ValueError("max must be from 1 to 1024")
    frame = request_frame(subject, None, body, window if timeout is None else timeout)
    frame["gather"] = {"max": max, "window_ms": timeout_ms(window)}
    return frame


def monitor_frame(subject: Optional[str], kinds: Optional[Iterable[str]]) -> Dict[str, Any]:
    """A `monitor` frame (without rid)."""
    frame: Dict[str, Any] = {"type": "monitor"}
    if subject is not None:
        frame["subject"] = subject
    if kinds is not None:
        frame["kinds"] = list(kinds)
    return frame


def reply_to_of(request: Any) -> str:
    """The `reply_to` of a request frame or message, or `request` itself if a string."""
    if isinstance(request, str):
        return request
    reply_to = request.get("reply_to") if isinstance(request, Mapping) else None
    if not isinstance(reply_to, str):
        raise BadRequest("this frame has no `reply_to`: it is not a request")
    return reply_to


def interest_items(answer: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The current subscriptions of an `interest` answer, shaped as `interest_change` adds."""
    iid = answer.get("iid")
    return [{"type": "interest_change", "iid": iid, "is_add": True, **sub}
            for sub in answer.get("subscriptions") or [] if isinstance(sub, Mapping)]


# ── KV ──────────────────────────────────────────────────────────────────────

class KeyList(List[str]):
    """The keys of a `kv_keys` answer; `more` says the bus left some out (it lists at
    most 10 000)."""

    more: bool = False


def _revision(if_revision: Optional[int]) -> int:
    if isinstance(if_revision, bool) or not isinstance(if_revision, int) or if_revision < 0:
        raise ValueError("if_revision must be an integer, 0 or more (0: the key must not exist)")
    return if_revision


def kv_put_frame(key: str, value: Any, ttl: Optional[float],
                 if_revision: Optional[int]) -> Dict[str, Any]:
    """A `kv_put` frame (without rid); `ttl` in seconds."""
    frame: Dict[str, Any] = {"type": "kv_put", "key": key, "value": value}
    if ttl is not None:
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0 \
                or math.isinf(ttl):
            raise ValueError("ttl must be a number of seconds over 0")
        frame["ttl_s"] = ttl
    if if_revision is not None:
        frame["if_revision"] = _revision(if_revision)
    return frame


def kv_delete_frame(key: str, if_revision: Optional[int]) -> Dict[str, Any]:
    """A `kv_delete` frame (without rid)."""
    frame: Dict[str, Any] = {"type": "kv_delete", "key": key}
    if if_revision is not None:
        frame["if_revision"] = _revision(if_revision)
    return frame


def key_list(answer: Mapping[str, Any]) -> KeyList:
    """The keys of a `kv_key_list` answer."""
    keys = KeyList(str(k) for k in answer.get("keys") or [])
    keys.more = bool(answer.get("more"))
    return keys


# ── jobs ────────────────────────────────────────────────────────────────────

def job_publish_frame(goal: str, payload: Any, idempotency_key: Optional[str], priority: int,
                      delay: Optional[float], max_attempts: Optional[int],
                      backoff: Optional[float]) -> Dict[str, Any]:
    """A `job_publish` frame (without rid); `delay` and `backoff` in seconds."""
    frame: Dict[str, Any] = {"type": "job_publish", "goal": goal, "payload": payload}
    if idempotency_key is not None:
        frame["idempotency_key"] = idempotency_key
    if priority:
        frame["priority"] = int(priority)
    if delay is not None:
        frame["delay_ms"] = duration_ms(delay, "delay")
    if max_attempts is not None:
        frame["max_attempts"] = int(max_attempts)
    if backoff is not None:
        frame["backoff_ms"] = duration_ms(backoff, "backoff")
    return frame


def job_claim_frame(pattern: str, lease: float, wait: float) -> Dict[str, Any]:
    """A `job_claim` frame (without rid); `lease` and `wait` in seconds."""
    return {"type": "job_claim", "goal": pattern,
            "lease_ms": duration_ms(lease, "lease", positive=True),
            "wait_ms": duration_ms(wait, "wait", maximum_ms=MAX_WAIT_MS)}


def job_id(job: Any) -> str:
    """The id of a job: `job` itself if a string, else the `job` field of a frame
    (a claimed `job`, a `job_info`, ...)."""
    if isinstance(job, str):
        return job
    jid = job.get("job") if isinstance(job, Mapping) else None
    if not isinstance(jid, str):
        raise TypeError("give a job id or a frame with `job` (a claimed job, a job_info)")
    return jid


def job_lease_frame(kind: str, job: Any, lease: Optional[str]) -> Dict[str, Any]:
    """A `job_extend`, `job_fulfill` or `job_fail` frame (without rid) for a job and its
    lease token; `lease` None takes the token from `job`, the frame `job_claim` returned."""
    if lease is None:
        lease = job.get("lease") if isinstance(job, Mapping) else None
        if not isinstance(lease, str):
            raise TypeError("give the lease token, or the claimed job frame (which has it)")
    elif not isinstance(lease, str):
        raise TypeError(f"a lease is the token string of a claim, not {type(lease).__name__}")
    return {"type": kind, "job": job_id(job), "lease": lease}


def job_list_frame(state: Optional[str], goal: Optional[str],
                   limit: Optional[int]) -> Dict[str, Any]:
    """A `job_list` frame (without rid)."""
    frame: Dict[str, Any] = {"type": "job_list"}
    if state is not None:
        frame["state"] = state
    if goal is not None:
        frame["goal"] = goal
    if limit is not None:
        frame["limit"] = int(limit)
    return frame


# ── streams ─────────────────────────────────────────────────────────────────

#: What `stream_ack` may say of a delivered message.
ACK_OPS = ("ack", "nak", "term", "progress")
#: Longest `delay_ms` of a `nak` (30 days).
MAX_NAK_DELAY_MS = 30 * 24 * 3600 * 1000
#: Where a replay or a new consumer starts: "first", "last", "new", a seq (an int),
#: or `{"seq": n}`, `{"time_ms": t}` or `{"id": message_id}`.
From = Union[str, int, Mapping[str, Any]]
#: A message to acknowledge: its seq, or its `stream_event` frame.
Seq = Union[int, Mapping[str, Any]]
_FROM_WORDS = ("first", "last", "new")
_FROM_KEYS = ("seq", "time_ms", "id")


def stream_from(start: From) -> Union[str, Dict[str, Any]]:
    """`from` as the bus takes it: "first", "last" or "new", or a one-key object
    (`seq`, `time_ms` or `id`); an int is a seq. `ValueError` for anything else."""
    if isinstance(start, str):
        if start not in _FROM_WORDS:
            raise ValueError(f"from_ must be one of {', '.join(_FROM_WORDS)}, a seq, "
                             "or {'seq': n}, {'time_ms': t} or {'id': ...}")
        return start
    if isinstance(start, int) and not isinstance(start, bool):
        start = {"seq": start}
    if isinstance(start, Mapping) and len(start) == 1:
        (key, value), = start.items()
        if key == "id" and isinstance(value, str):
            return {"id": value}
        if key in ("seq", "time_ms") and isinstance(value, int) \
                and not isinstance(value, bool) and value >= 0:
            return {key: value}
    raise ValueError("from_ must be \"first\", \"last\", \"new\", a seq (an int, 0 or more), "
                     "or {'seq': n}, {'time_ms': t} or {'id': message_id}")


def replay_frame(stream: str, start: From, subject: Optional[str]) -> Dict[str, Any]:
    """A `replay` frame (without rid)."""
    frame: Dict[str, Any] = {"type": "replay", "stream": stream, "from": stream_from(start)}
    if subject is not None:
        frame["subject"] = subject
    return frame


def consume_frame(stream: str, durable: str, subject: Optional[str], start: Optional[From],
                  ack_wait: Optional[float], max_deliver: Optional[int],
                  max_ack_pending: Optional[int]) -> Dict[str, Any]:
    """A `consume` frame (without rid); `ack_wait` in seconds. What is None is left out
    (the bus's defaults for a new consumer, the settings it has for an existing one)."""
    frame: Dict[str, Any] = {"type": "consume", "stream": stream, "durable": durable}
    if subject is not None:
        frame["subject"] = subject
    if start is not None:
        frame["from"] = stream_from(start)
    if ack_wait is not None:
        frame["ack_wait_ms"] = duration_ms(ack_wait, "ack_wait", positive=True)
    if max_deliver is not None:
        frame["max_deliver"] = int(max_deliver)
    if max_ack_pending is not None:
        frame["max_ack_pending"] = int(max_ack_pending)
    return frame


def stream_seq(seq: Any) -> int:
    """The seq of a message: `seq` itself if an int, else the `seq` field of a frame
    (a `stream_event`)."""
    if isinstance(seq, Mapping):
        seq = seq.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise TypeError("give a seq (an int) or a `stream_event` frame")
    return seq


def stream_ack_frame(stream: str, durable: str, seq: Any, op: str,
                     delay: Optional[float]) -> Dict[str, Any]:
    """A `stream_ack` frame (without rid); `delay` (seconds) only for a `nak`."""
    if op not in ACK_OPS:
        raise ValueError(f"op must be one of {', '.join(ACK_OPS)}")
    frame: Dict[str, Any] = {"type": "stream_ack", "stream": stream, "durable": durable,
                             "seq": stream_seq(seq), "op": op}
    if delay is not None:
        if op != "nak":
            raise ValueError("only a nak takes a delay")
        frame["delay_ms"] = duration_ms(delay, "delay", maximum_ms=MAX_NAK_DELAY_MS)
    return frame
