"""What the sync and asyncio clients share: paths, request frames, frame routing."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from .errors import BadRequest, NotNegotiated

#: The protocol version this client speaks.
PROTOCOL = 2
#: Features a `Client` asks for unless told otherwise.
DEFAULT_FEATURES: Tuple[str, ...] = ("topics", "rpc")
#: Seconds between heartbeat pings (the bus closes connections silent for 90 s).
HEARTBEAT_INTERVAL = 30.0
#: Extra seconds a client waits past a request's own timeout before giving up locally.
GRACE = 1.0
#: Longest `timeout_ms` the bus takes.
MAX_TIMEOUT_MS = 300_000
ON_FULL = ("pause", "drop", "disconnect")

# The feature each request type needs.
FEATURE_OF = {
    "subscribe": "topics", "unsubscribe": "topics", "publish": "topics",
    "interest": "topics", "uninterest": "topics",
    "request": "rpc", "reply": "rpc",
    "monitor": "monitor",
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
    if "rid" in frame:
        return ANSWER, frame["rid"]
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
