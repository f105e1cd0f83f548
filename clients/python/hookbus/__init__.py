"""Python client of the hookbus message bus (protocol 2, hermes-bus 0.7 compatible).

`Client` is the synchronous client, `hookbus.aio.AsyncClient` the asyncio one;
`BusClient` and `send_message` keep hermes-bus's names and signatures.
"""

import logging as _logging

from ._common import DEFAULT_FEATURES, PROTOCOL, default_socket_path
from ._frame import MAX_FRAME, FrameDecoder, decode, encode
from .client import (BusClient, Client, Handler, Interest, Monitor, Service, Subscription,
                     send_message)
from .errors import (AlreadyRegistered, BadFrame, BadRequest, BadSubject, Closed, Dropped,
                     EndpointNotFound, FrameTimeout, FrameTooLarge, HeartbeatTimeout,
                     HookbusError, NoResponders, NoSuchSubscription, NotNegotiated,
                     PermissionDenied, Replaced, ResponderGone, RetainedFull, ShuttingDown,
                     SlowConsumer, Timeout, TooManyConnections, TooManyRequests,
                     TooManySubscriptions, UnknownType, error_class, error_from_frame)

__version__ = "0.2.0"

_logging.getLogger("hookbus").addHandler(_logging.NullHandler())

__all__ = [
    "AlreadyRegistered", "BadFrame", "BadRequest", "BadSubject", "BusClient", "Client", "Closed",
    "DEFAULT_FEATURES", "Dropped", "EndpointNotFound", "FrameDecoder", "FrameTimeout",
    "FrameTooLarge", "Handler", "HeartbeatTimeout", "HookbusError", "Interest", "MAX_FRAME",
    "Monitor", "NoResponders", "NoSuchSubscription", "NotNegotiated", "PROTOCOL",
    "PermissionDenied", "Replaced", "ResponderGone", "RetainedFull", "Service", "ShuttingDown",
    "SlowConsumer", "Subscription", "Timeout", "TooManyConnections", "TooManyRequests",
    "TooManySubscriptions", "UnknownType", "decode", "default_socket_path", "encode",
    "error_class", "error_from_frame", "send_message", "__version__",
]
