"""Python client of the hookbus message bus (protocol 2: topics, rpc, monitor, kv, jobs,
streams; hermes-bus 0.7 compatible).

`Client` is the synchronous client, `hookbus.aio.AsyncClient` the asyncio one;
`BusClient` and `send_message` keep hermes-bus's names and signatures.
"""

import logging as _logging

from ._common import DEFAULT_FEATURES, PROTOCOL, KeyList, default_socket_path
from ._frame import MAX_FRAME, FrameDecoder, decode, encode
from .client import (BusClient, Client, Consumer, Handler, Interest, KvWatch, Monitor, Replay,
                     Service, Subscription, send_message)
from .errors import (AlreadyRegistered, BadFrame, BadKey, BadRequest, BadSubject, Closed,
                     ConsumerBusy, Dropped, EndpointNotFound, FrameTimeout, FrameTooLarge,
                     HeartbeatTimeout, HookbusError, IdempotencyConflict, KvFull, LeaseLost,
                     NoResponders, NoSuchSubscription, NotFound, NotNegotiated, PermissionDenied,
                     Replaced, ResponderGone, RetainedFull, RevisionMismatch, SeqGone,
                     ShuttingDown, SlowConsumer, SnapshotTooLarge, StorageUnavailable, Timeout,
                     TooManyConnections, TooManyRequests, TooManySubscriptions, UnknownType,
                     ValueTooLarge, WatchLost, error_class, error_from_frame)

__version__ = "0.3.0"

_logging.getLogger("hookbus").addHandler(_logging.NullHandler())

__all__ = [
    "AlreadyRegistered", "BadFrame", "BadKey", "BadRequest", "BadSubject", "BusClient", "Client",
    "Closed", "Consumer", "ConsumerBusy", "DEFAULT_FEATURES", "Dropped", "EndpointNotFound",
    "FrameDecoder", "FrameTimeout", "FrameTooLarge", "Handler", "HeartbeatTimeout",
    "HookbusError", "IdempotencyConflict", "Interest", "KeyList", "KvFull", "KvWatch",
    "LeaseLost", "MAX_FRAME", "Monitor", "NoResponders", "NoSuchSubscription", "NotFound",
    "NotNegotiated", "PROTOCOL", "PermissionDenied", "Replaced", "Replay", "ResponderGone",
    "RetainedFull", "RevisionMismatch", "SeqGone", "Service", "ShuttingDown", "SlowConsumer",
    "SnapshotTooLarge", "StorageUnavailable", "Subscription", "Timeout", "TooManyConnections",
    "TooManyRequests", "TooManySubscriptions", "UnknownType", "ValueTooLarge", "WatchLost",
    "decode", "default_socket_path", "encode", "error_class", "error_from_frame",
    "send_message", "__version__",
]
