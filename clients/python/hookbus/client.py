"""The synchronous client: `Client` (protocol 2), and hermes-bus 0.7's `BusClient`
and `send_message` under their own names.

A `Client` owns one connection and two threads: a reader, which only sorts the
frames it reads into queues and never writes (so the bus holding this client
back can never stop it reading), and a heartbeat that pings every 30 s. Handlers
and callbacks run on threads of their own, one per subscription or service, so
they may call the client, even wait for a request.
"""

from __future__ import annotations

import itertools
import logging
import queue
import socket
import threading
import time
import uuid
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence,
                    Tuple, Union, cast)

from . import _common as C
from ._core import END, Call, Router, StreamBase
from ._frame import MAX_FRAME, FrameDecoder, encode
from .errors import (BadFrame, Closed, HookbusError, NoSuchSubscription, NotFound, Timeout,
                     error_from_frame)

log = logging.getLogger("hookbus")

Frame = Dict[str, Any]
#: A `serve` handler: `handler(body, request_frame)` returns the reply's body.
Handler = Callable[[Any, Frame], Any]


class _Stream(StreamBase):
    """A stream read from any thread."""

    def __init__(self) -> None:
        super().__init__()
        self._queue: "queue.Queue[Any]" = queue.Queue()

    def next(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The next frame; None if `timeout` seconds pass first (None: wait for ever).

        Raises `Closed` once the stream has ended and is empty, or the error that
        ended the connection (`ShuttingDown`, `SlowConsumer`, ...).
        """
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is END:
            self._queue.put(END)
            raise self._ended_error()
        return cast(Frame, item)

    def __iter__(self) -> Iterator[Frame]:
        """Yields frames until the stream ends; raises if the connection was lost."""
        while True:
            try:
                frame = self.next()
            except HookbusError:
                if self._orderly:
                    return
                raise
            if frame is not None:
                yield frame


class Subscription(_Stream):
    """A subscription: iterate it, or call `next(timeout)`, for its `event` frames.

    Retained values come first (with `"retained": true`), then live events. In a
    session with the `rpc` feature the bus also sends it the requests on matching
    subjects, as `request` frames: answer them with `Client.reply`.
    """

    def __init__(self, client: "Client", pattern: str, queue: Optional[str],
                 callback: Optional[Callable[[Frame], Any]] = None) -> None:
        super().__init__()
        self._client = client
        self.pattern = pattern
        self.queue = queue
        #: The bus's number for this subscription (set when `subscribed` arrives).
        self.sid: Optional[int] = None
        self._callback = callback

    def _start(self) -> None:
        if self._callback is not None:
            threading.Thread(target=self._run, daemon=True,
                             name=f"hookbus-{self.pattern or 'direct'}").start()

    def _run(self) -> None:
        assert self._callback is not None
        try:
            for frame in self:
                try:
                    self._callback(frame)
                except Exception:
                    log.exception("callback for %r failed", self.pattern)
        except HookbusError as e:
            log.debug("subscription %r ended: %s", self.pattern, e)

    def unsubscribe(self, timeout: Optional[float] = None) -> None:
        """Ends the subscription; frames already received can still be read."""
        if self.ended:
            return
        try:
            if self.sid is not None and not self._client.closed:
                self._client._call({"type": "unsubscribe", "sid": self.sid}, timeout=timeout)
        except Closed:
            pass
        finally:
            self._client._forget(self.sid, self)
            self._end(Closed("unsubscribed"), orderly=True)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.unsubscribe()


class Service(Subscription):
    """A responder: calls its handler for each request, one at a time, and replies.

    The handler gets `(body, request_frame)` and returns the reply's body. If it
    raises, the error is logged and no reply is sent (the requester then gets
    `timeout`, or `responder_gone` once this client leaves).
    """

    def __init__(self, client: "Client", pattern: Optional[str], queue: Optional[str],
                 handler: Handler) -> None:
        super().__init__(client, pattern or "", queue, callback=self._handle)
        self.handler = handler

    def _push(self, frame: Frame) -> None:
        if frame.get("type") == "request":  # events on the subject are not for a service
            super()._push(frame)

    def _handle(self, frame: Frame) -> None:
        body = self.handler(frame.get("body"), frame)
        try:
            self._client.reply(frame, body)
        except HookbusError as e:
            log.warning("reply to %r failed: %s", frame.get("subject"), e)

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stops serving (the same as `unsubscribe`)."""
        self.unsubscribe(timeout)


class Interest(_Stream):
    """Who subscribes to subjects overlapping a pattern.

    `subscriptions` is the list when it was asked for. Iterating yields that list
    first, as `interest_change` frames with `"is_add": true`, then each change.
    """

    def __init__(self, client: "Client", pattern: str) -> None:
        super().__init__()
        self._client = client
        self.pattern = pattern
        self.iid: Optional[int] = None
        self.subscriptions: List[Frame] = []

    def close(self, timeout: Optional[float] = None) -> None:
        """Stops watching (`uninterest`)."""
        if self.ended:
            return
        try:
            if self.iid is not None and not self._client.closed:
                self._client._call({"type": "uninterest", "iid": self.iid}, timeout=timeout)
        except Closed:
            pass
        finally:
            self._client._forget_interest(self.iid, self)
            self._end(Closed("the interest is closed"), orderly=True)

    def __enter__(self) -> "Interest":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Monitor(_Stream):
    """The session's monitor: iterate it for `monitored` frames; `missed` counts gaps."""

    def __init__(self, client: "Client") -> None:
        super().__init__()
        self._client = client
        self.sid: Optional[int] = None

    def close(self) -> None:
        """Stops reading. The protocol has no request that ends a monitor: the bus goes
        on sending, and the client drops what it sends, until the connection closes or
        `Client.monitor` sets a new filter."""
        self._client._forget(self.sid, self)
        self._end(Closed("the monitor is closed"), orderly=True)

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class KvWatch(_Stream):
    """A KV watch: iterate it, or call `next(timeout)`, for its frames.

    First one `kv_change` with `"op": "put"` per current value (unless asked
    without snapshot), then one `kv_synced`, then each change in revision order:
    `kv_change` frames with `op` `put` (with `value`), `delete` or `expire`, and
    `key` and `revision`. If the bus drops the watch because this client read too
    slowly, reading raises `WatchLost` after the frames already received: watch
    again for a fresh view.
    """

    def __init__(self, client: "Client", pattern: str) -> None:
        super().__init__()
        self._client = client
        self.pattern = pattern
        #: The bus's number for this watch (set when `kv_watching` arrives).
        self.wid: Optional[int] = None

    def close(self, timeout: Optional[float] = None) -> None:
        """Stops watching (`kv_unwatch`); frames already received can still be read."""
        if self.ended:
            return
        try:
            if self.wid is not None and not self._client.closed:
                self._client._call({"type": "kv_unwatch", "wid": self.wid}, timeout=timeout)
        except (Closed, NoSuchSubscription):
            pass  # the connection, or the watch, ended already
        finally:
            self._client._forget_watch(self.wid, self)
            self._end(Closed("the watch is closed"), orderly=True)

    def __enter__(self) -> "KvWatch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Replay(_Stream):
    """A replay of a stream: iterate it, or call `next(timeout)`, for its `stream_event`
    frames (`seq`, `id`, `ts_ms`, `subject`, `from`, `uid`, `body`), in seq order.

    It covers the messages kept when it started, up to `last_seq`; those published
    later are not in it (subscribe for them). Iterating stops after the last one,
    when the bus's `replay_end` frame arrives: that frame is then `end`, and `next`
    raises `Closed`. If the connection ends first, iterating raises instead.
    """

    def __init__(self, client: "Client", stream: str, subject: Optional[str]) -> None:
        super().__init__()
        self._client = client
        self.stream = stream
        self.subject = subject
        #: The bus's number for this replay (set when `replaying` arrives).
        self.replay: Optional[int] = None
        #: The `replaying` answer: `first_seq` and `last_seq` of the stream when it started.
        self.info: Frame = {}
        #: The first seq the stream keeps, and the last seq the replay covers.
        self.first_seq: Optional[int] = None
        self.last_seq: Optional[int] = None
        #: The `replay_end` frame, once every message was received (None until then).
        self.end: Optional[Frame] = None

    def close(self) -> None:
        """Stops reading. The protocol has no request that ends a replay: the bus sends the
        rest, which the client drops. Frames already received can still be read."""
        self._client._forget_replay(self.replay, self)
        self._end(Closed("the replay is closed"), orderly=True)

    def __enter__(self) -> "Replay":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Consumer(_Stream):
    """A durable consumer this client consumes: iterate it, or call `next(timeout)`, for
    its `stream_event` frames (`seq`, `deliveries`, `id`, `ts_ms`, `subject`, `from`,
    `uid`, `body`).

    Each message stays pending until acknowledged with `ack`, `nak`, `term` or
    `progress` (its seq, or the frame itself); one not acknowledged within the ack
    wait, `nak`ed, or pending when this client stops consuming, is delivered again,
    with `deliveries` one higher. `close()` (or leaving a `with` block) stops
    consuming: the bus keeps the consumer, and whoever consumes it next gets what was
    not acknowledged. `info` is the bus's `consuming` answer (`created`, `next_seq`,
    `pending`, `ack_wait_ms`, `max_deliver`, `max_ack_pending`, ...).
    """

    def __init__(self, client: "Client", stream: str, durable: str) -> None:
        super().__init__()
        self._client = client
        self.stream = stream
        self.durable = durable
        #: The `consuming` answer (set when it arrives).
        self.info: Frame = {}

    def ack(self, seq: C.Seq, timeout: Optional[float] = None) -> None:
        """Done with a message: it is never delivered again. `NotFound` if it is not
        pending (acknowledged already, or given up)."""
        self._client.stream_ack(self.stream, self.durable, seq, "ack", timeout=timeout)

    def nak(self, seq: C.Seq, delay: Optional[float] = None,
            timeout: Optional[float] = None) -> None:
        """Not done: deliver the message again, after `delay` seconds (default at once)."""
        self._client.stream_ack(self.stream, self.durable, seq, "nak", delay, timeout)

    def term(self, seq: C.Seq, timeout: Optional[float] = None) -> None:
        """Never deliver the message again, though not done (one this consumer cannot
        handle)."""
        self._client.stream_ack(self.stream, self.durable, seq, "term", timeout=timeout)

    def progress(self, seq: C.Seq, timeout: Optional[float] = None) -> None:
        """Still working on the message: its ack wait starts over."""
        self._client.stream_ack(self.stream, self.durable, seq, "progress", timeout=timeout)

    def close(self, timeout: Optional[float] = None) -> None:
        """Stops consuming (`unconsume`); frames already received can still be read (and
        acknowledged, by any connection, until they are delivered again)."""
        if self.ended:
            return
        try:
            if not self._client.closed:
                self._client._call({"type": "unconsume", "stream": self.stream,
                                    "durable": self.durable}, timeout=timeout)
        except (Closed, NotFound):
            pass  # the connection ended, or this one does not consume it any more
        finally:
            self._client._forget_consumer(self.stream, self.durable, self)
            self._end(Closed("the consumer is closed"), orderly=True)

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client(Router):
    """A hookbus connection speaking protocol 2.

    Connects, says `hello` (waiting up to `timeout` for `welcome`) and, given a
    `name`, registers it. `will` is `{"subject": S, "body": B, "retain": False}`,
    published by the bus if the connection ends without `bye`. `timeout` also
    bounds waits for the bus's answers (ping, subscribe, status, ...).

    Used as a context manager, it says `bye` on a normal exit (no will) and just
    closes when an exception leaves the block (the will is published).
    """

    _messages: _Stream

    def __init__(self, socket_path: Optional[str] = None, name: Optional[str] = None,
                 features: Sequence[str] = C.DEFAULT_FEATURES,
                 will: Optional[Mapping[str, Any]] = None, timeout: float = 5.0) -> None:
        super().__init__()
        self.socket_path = socket_path or C.default_socket_path()
        self.timeout = timeout
        #: Registered endpoint name, and the bus's session id for it.
        self.endpoint: Optional[str] = None
        self.session_id: Optional[str] = None
        #: The bus's name and frame limit, and the whole `welcome` frame.
        self.server: Optional[str] = None
        self.max_frame = MAX_FRAME
        self.welcome: Frame = {}
        self._messages = _Stream()
        self._write_lock = threading.Lock()
        self._rids = itertools.count(1)
        self._stop = threading.Event()

        hello = C.hello_frame(features, will)  # checks the will before connecting
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(self.socket_path)
            # No timeout from here on: the reader waits as long as the bus is silent,
            # and writes block while the bus holds this client back.
            self._sock.settimeout(None)
        except OSError:
            self._sock.close()
            raise
        self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                        name="hookbus-reader")
        self._reader.start()
        try:
            try:
                self.welcome = self._call(hello, timeout=timeout)
            except Timeout:
                raise Timeout(f"no `welcome` from {self.socket_path} within {timeout:g} s: "
                              "not a hookbus daemon? (hermes-bus never answers `hello`; "
                              "use BusClient there)") from None
            self._welcomed(self.welcome)
            self.server = self.welcome.get("server")
            self.max_frame = int(self.welcome.get("max_frame") or MAX_FRAME)
            if name is not None:
                self.register(name)
        except BaseException:
            self.close()
            raise
        threading.Thread(target=self._heartbeat_loop, daemon=True,
                         name="hookbus-heartbeat").start()

    # ── connection ──────────────────────────────────────────────────────

    def register(self, name: str) -> str:
        """Registers an endpoint name; returns the session id."""
        answer = self._call({"type": "register", "endpoint": name})
        self.endpoint = name
        self.session_id = answer.get("session_id")
        return str(self.session_id)

    def bye(self, timeout: Optional[float] = None) -> None:
        """Says `bye` (the bus drops the will), then closes."""
        try:
            if not self._closed:
                self._call({"type": "bye"}, timeout=timeout)
        except HookbusError as e:
            log.debug("bye: %s", e)
        finally:
            self.close()

    def close(self) -> None:
        """Closes the connection without `bye`: the bus publishes the will, if any."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._stop.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if threading.current_thread() is not self._reader:
            self._reader.join(self.timeout)
        self._sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, exc_type: Optional[type], *exc: object) -> None:
        if exc_type is None:
            self.bye()
        else:
            self.close()

    # ── hermes messaging ────────────────────────────────────────────────

    def send(self, to: Optional[str], body: Any) -> str:
        """Sends a message to an endpoint (None: broadcast); returns its id."""
        frame = C.message_frame(to, body, self.endpoint)
        self._send(frame)
        return str(frame["id"])

    def recv(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The next `message` frame; None if `timeout` passes first.

        Requests addressed to this endpoint (`to`) come here too, as `request`
        frames, unless `serve(None, handler)` handles them. Raises when the
        connection has ended and nothing is left.
        """
        return self._messages.next(timeout)

    def ping(self) -> float:
        """Pings the bus; returns the round trip in seconds."""
        start = time.monotonic()
        self._call({"type": "ping"})
        return time.monotonic() - start

    def status(self) -> Frame:
        """The bus's `status` answer."""
        return self._call({"type": "status"})

    def list_endpoints(self) -> Dict[str, str]:
        """Registered endpoints and their session ids."""
        return dict(self._call({"type": "list_endpoints"}).get("endpoints") or {})

    # ── topics ──────────────────────────────────────────────────────────

    def publish(self, subject: str, body: Any, retain: bool = False) -> None:
        """Publishes on a subject; with `retain` the bus keeps it as the subject's value
        (a retained None clears it)."""
        C.require(self.features, "publish")
        self._send({"type": "publish", "subject": subject, "body": body, "retain": bool(retain)})

    def subscribe(self, pattern: str, queue: Optional[str] = None, on_full: str = "pause",
                  callback: Optional[Callable[[Frame], Any]] = None) -> Subscription:
        """Subscribes to a pattern (`*` one token, `>` the rest), in queue group `queue`.

        With `callback`, each frame is passed to it on a thread of the subscription's
        own instead of being queued for reading.
        """
        C.require(self.features, "subscribe")
        sub = Subscription(self, pattern, queue, callback)
        self._call(C.subscribe_frame(pattern, queue, on_full), on_answer=self._sub_installer(sub))
        sub._start()
        return sub

    def interest(self, pattern: str) -> Interest:
        """Watches the subscriptions whose patterns overlap `pattern`."""
        C.require(self.features, "interest")
        watch = Interest(self, pattern)
        self._call({"type": "interest", "subject": pattern},
                   on_answer=self._interest_installer(watch))
        return watch

    # ── request / reply ─────────────────────────────────────────────────

    def request(self, subject: Optional[str] = None, body: Any = None, to: Optional[str] = None,
                timeout: float = 5.0) -> Any:
        """Sends a request to a subject's responders or an endpoint; returns the reply's body.

        Raises `NoResponders`, `Timeout`, `ResponderGone`, `Dropped`, ... as the bus
        answers; `Timeout` also if the bus says nothing for `timeout` + 1 s.
        """
        C.require(self.features, "request")
        frame = C.request_frame(subject, to, body, timeout)
        return self._call(frame, timeout=timeout + C.GRACE).get("body")

    def gather(self, subject: str, body: Any = None, max: int = 1024, window: float = 1.0,
               timeout: Optional[float] = None) -> List[Frame]:
        """Sends a request to every responder; returns up to `max` `response` frames
        (each with `from`, `session` and `body`) that came within `window` seconds.

        No answer in time, or responders that left, give the responses so far
        (perhaps none); other errors (`NoResponders`, `Dropped`, ...) are raised,
        and `Timeout` if the bus has not ended the gather 1 s after its time.
        """
        C.require(self.features, "request")
        frame = C.gather_frame(subject, body, max, window, timeout)
        wait = (window if timeout is None else timeout) + C.GRACE
        responses, error = self._gather_result(self._call_many(frame, wait))
        if error is not None:
            raise error
        return responses

    def serve(self, pattern: Optional[str], handler: Handler,
              queue: Optional[str] = None) -> Service:
        """Answers requests on `pattern` with `handler(body, request_frame)`'s result.

        `pattern` None serves the requests addressed to this client's endpoint with
        `to` instead (register a name first); `queue` makes this one member of a
        queue group, so each request goes to one member.
        """
        C.require(self.features, "reply")
        service = Service(self, pattern, queue, handler)
        if pattern is None:
            with self._lock:
                if self._direct is not None and not self._direct.ended:
                    raise ValueError("requests to this endpoint are served already")
                self._direct = service
        else:
            self._call(C.subscribe_frame(pattern, queue, "pause"),
                       on_answer=self._sub_installer(service))
        service._start()
        return service

    def reply(self, request: Union[Mapping[str, Any], str], body: Any) -> None:
        """Answers a request frame (or a message with `reply_to`, or a `reply_to` string).

        Without the `rpc` feature it answers as hermes clients do: a message to `reply_to`.
        """
        reply_to = C.reply_to_of(request)
        if "rpc" in self.features:
            self._send({"type": "reply", "reply_to": reply_to, "body": body})
        else:
            self._send(C.message_frame(reply_to, body, self.endpoint))

    # ── monitor ─────────────────────────────────────────────────────────

    def monitor(self, subject: Optional[str] = None,
                kinds: Optional[Iterable[str]] = None) -> Monitor:
        """Watches every frame the bus routes (filtered by subject pattern and kinds).

        A session has one monitor: calling this again replaces the filter and ends
        the previous `Monitor` object.
        """
        C.require(self.features, "monitor")
        mon = Monitor(self)
        self._call(C.monitor_frame(subject, kinds), on_answer=self._monitor_installer(mon))
        return mon

    # ── KV ──────────────────────────────────────────────────────────────

    def kv_put(self, key: str, value: Any, ttl: Optional[float] = None,
               if_revision: Optional[int] = None) -> int:
        """Stores a JSON value under a key; returns its new revision, once committed.

        `ttl`: the key expires that many seconds later. `if_revision`: store only if
        the key is at that revision (0: only if it does not exist), else raise
        `RevisionMismatch`, whose `revision` is the current one.
        """
        C.require(self.features, "kv_put")
        return int(self._call(C.kv_put_frame(key, value, ttl, if_revision))["revision"])

    def kv_get(self, key: str) -> Optional[Frame]:
        """The `kv_value` frame of a key (`value`, `revision`, and `expires_at_ms` for a
        key with a TTL), or None if the key does not exist."""
        C.require(self.features, "kv_get")
        try:
            return self._call({"type": "kv_get", "key": key})
        except NotFound:
            return None

    def kv_delete(self, key: str, if_revision: Optional[int] = None) -> int:
        """Deletes a key; returns the deletion's revision.

        Raises `NotFound` if there is no such key, and `RevisionMismatch` if
        `if_revision` is given and the key is not at it.
        """
        C.require(self.features, "kv_delete")
        return int(self._call(C.kv_delete_frame(key, if_revision))["revision"])

    def kv_keys(self, prefix: str = "") -> C.KeyList:
        """The keys starting with `prefix`, sorted: a list whose `more` says the bus
        left some out (it lists at most 10 000)."""
        C.require(self.features, "kv_keys")
        return C.key_list(self._call({"type": "kv_keys", "prefix": prefix}))

    def kv_watch(self, pattern: str, snapshot: bool = True) -> KvWatch:
        """Watches the keys matching `pattern` (a key, or `*` / `>` wildcards).

        The `KvWatch` yields the current values first (`snapshot` False leaves them
        out), then `kv_synced`, then every change; see `KvWatch`.
        """
        C.require(self.features, "kv_watch")
        watch = KvWatch(self, pattern)
        self._call({"type": "kv_watch", "key": pattern, "snapshot": bool(snapshot)},
                   on_answer=self._watch_installer(watch))
        return watch

    # ── jobs ────────────────────────────────────────────────────────────

    def job_publish(self, goal: str, payload: Any = None, idempotency_key: Optional[str] = None,
                    priority: int = 0, delay: Optional[float] = None,
                    max_attempts: Optional[int] = None,
                    backoff: Optional[float] = None) -> Tuple[str, bool]:
        """Queues a job for `goal` (a subject); returns `(job_id, duplicate)`.

        `delay`: seconds before it may be claimed. `max_attempts` (bus default 3)
        claims before it is dead; `backoff` (bus default 5 s) the base delay before a
        failed attempt is queued again, doubling with each attempt. An
        `idempotency_key` seen in the last hour returns that job with `duplicate`
        True for the same payload, and raises `IdempotencyConflict` for another.
        """
        C.require(self.features, "job_publish")
        answer = self._call(C.job_publish_frame(goal, payload, idempotency_key, priority,
                                                delay, max_attempts, backoff))
        return str(answer["job"]), bool(answer.get("duplicate"))

    def job_claim(self, pattern: str, lease: float = 60.0, wait: float = 0.0) -> Optional[Frame]:
        """Claims the first ready job whose goal matches `pattern`, leased for `lease`
        seconds; waits up to `wait` seconds (at most 300) for one.

        Returns the `job` frame (`job`, `goal`, `payload`, `attempt`, `lease`,
        `lease_until_ms`), to hand to `job_fulfill`, `job_fail` or `job_extend`, or
        None if no job was ready in time. The answer is waited for `wait` plus the
        client's `timeout` seconds before `Timeout` is raised.
        """
        C.require(self.features, "job_claim")
        frame = C.job_claim_frame(pattern, lease, wait)
        answer = self._call(frame, timeout=frame["wait_ms"] / 1000 + self.timeout)
        return answer if answer.get("type") == "job" else None

    def job_extend(self, job: Union[Mapping[str, Any], str], lease: Optional[str] = None,
                   duration: float = 60.0) -> int:
        """Extends a job's lease to `duration` seconds from now; returns the new end of the
        lease (`lease_until_ms`, Unix ms).

        `job` is the claimed job frame (which carries its lease) or a job id with its
        `lease` token. Raises `LeaseLost` if the lease is not the job's any more.
        """
        C.require(self.features, "job_extend")
        frame = C.job_lease_frame("job_extend", job, lease)
        frame["lease_ms"] = C.duration_ms(duration, "duration", positive=True)
        return int(self._call(frame)["lease_until_ms"])

    def job_fulfill(self, job: Union[Mapping[str, Any], str], lease: Optional[str] = None,
                    result: Any = None) -> None:
        """Marks a claimed job done, with an optional JSON `result`; `LeaseLost` if the
        lease is not the job's any more (the worker must stop: another may have it)."""
        C.require(self.features, "job_fulfill")
        frame = C.job_lease_frame("job_fulfill", job, lease)
        if result is not None:
            frame["result"] = result
        self._call(frame)

    def job_fail(self, job: Union[Mapping[str, Any], str], lease: Optional[str] = None,
                 error: Optional[str] = None, retry: bool = True) -> Frame:
        """Gives a claimed job up as failed; returns the `job_failed` frame, whose `state`
        is `queued` (with `ready_at_ms`) or `dead`.

        With `retry` (the default) the job is queued again after its backoff, unless
        that was its last attempt; without, it is dead at once. `LeaseLost` as for
        `job_fulfill`.
        """
        C.require(self.features, "job_fail")
        frame = C.job_lease_frame("job_fail", job, lease)
        if error is not None:
            frame["error"] = str(error)
        frame["retry"] = bool(retry)
        return self._call(frame)

    def job_status(self, job: Union[Mapping[str, Any], str]) -> Frame:
        """The `job_info` frame of a job (`state`, `attempt`, `payload`, `result`,
        `error`, ...); raises `NotFound` for an unknown (or long finished) job."""
        C.require(self.features, "job_status")
        return self._call({"type": "job_status", "job": C.job_id(job)})

    def job_list(self, state: Optional[str] = None, goal: Optional[str] = None,
                 limit: Optional[int] = None) -> List[Frame]:
        """Jobs as `job_info` frames, oldest first: in `state` (`queued`, `leased`,
        `done`, `dead` or `cancelled`), with a goal matching the pattern `goal`, at most
        `limit` (bus default 100, at most 1000)."""
        C.require(self.features, "job_list")
        return list(self._call(C.job_list_frame(state, goal, limit)).get("jobs") or [])

    def job_retry(self, job: Union[Mapping[str, Any], str]) -> None:
        """Queues a dead or cancelled job again, its attempts reset."""
        C.require(self.features, "job_retry")
        self._call({"type": "job_retry", "job": C.job_id(job)})

    def job_cancel(self, job: Union[Mapping[str, Any], str]) -> None:
        """Cancels a queued, leased or dead job (its lease, if any, is lost)."""
        C.require(self.features, "job_cancel")
        self._call({"type": "job_cancel", "job": C.job_id(job)})

    # ── streams ─────────────────────────────────────────────────────────

    def replay(self, stream: str, from_: C.From = "first",
               subject: Optional[str] = None) -> Replay:
        """Replays the messages a stream keeps, in seq order, those whose subject matches
        the pattern `subject` only, if given; see `Replay`.

        `from_` is where it starts: "first" (the oldest kept), "last" (the last
        message only), "new" (nothing: the replay ends at once), a seq (an int, or
        `{"seq": n}`), `{"time_ms": t}` (the first at or after that Unix time in
        ms) or `{"id": message_id}`. Raises `NotFound` for an unknown stream and
        `SeqGone` for a start the stream no longer keeps.
        """
        C.require(self.features, "replay")
        replay = Replay(self, stream, subject)
        self._call(C.replay_frame(stream, from_, subject), on_answer=self._replay_installer(replay))
        return replay

    def consume(self, stream: str, durable: str, subject: Optional[str] = None,
                from_: Optional[C.From] = None, ack_wait: Optional[float] = None,
                max_deliver: Optional[int] = None,
                max_ack_pending: Optional[int] = None) -> Consumer:
        """Consumes the durable consumer `durable` (1 to 64 letters, digits, `-`, `_`) of
        a stream, creating it if it is new; returns the `Consumer` its messages come to.

        `subject` (a pattern: only matching messages are delivered) is fixed when the
        consumer is created: give the same one each time (`BadRequest` otherwise).
        `from_` (as for `replay`; bus default "first") is where a new consumer starts.
        `ack_wait` (seconds, bus default 30), `max_deliver` (5) and `max_ack_pending`
        (1000), when given, replace an existing consumer's settings. Raises
        `ConsumerBusy` while another connection consumes it, `NotFound` for an
        unknown stream. Consuming it again on this client replaces the `Consumer`.
        """
        C.require(self.features, "consume")
        consumer = Consumer(self, stream, durable)
        self._call(C.consume_frame(stream, durable, subject, from_, ack_wait, max_deliver,
                                   max_ack_pending),
                   on_answer=self._consumer_installer(consumer))
        return consumer

    def stream_ack(self, stream: str, durable: str, seq: C.Seq, op: str = "ack",
                   delay: Optional[float] = None, timeout: Optional[float] = None) -> Frame:
        """Says what became of message `seq` (or a `stream_event` frame) of a durable
        consumer, which any connection may do; returns the `stream_acked` answer.

        `op` is "ack" (done), "nak" (deliver it again after `delay` seconds),
        "term" (never deliver it again) or "progress" (its ack wait starts over).
        `NotFound` if the message is not pending. `Consumer.ack` and the others call
        this.
        """
        C.require(self.features, "stream_ack")
        return self._call(C.stream_ack_frame(stream, durable, seq, op, delay), timeout=timeout)

    def stream_info(self, stream: str) -> Frame:
        """The `stream_info` frame of a stream: `subjects`, `messages`, `bytes`,
        `first_seq`, `last_seq`, its limits, and its `consumers` (each as `consuming`
        describes it); `NotFound` for an unknown stream."""
        C.require(self.features, "stream_info")
        return self._call({"type": "stream_info", "stream": stream})

    def stream_list(self) -> List[Frame]:
        """Every declared stream, as `stream_info` describes it (without consumers)."""
        C.require(self.features, "stream_list")
        return list(self._call({"type": "stream_list"}).get("streams") or [])

    def consumer_delete(self, stream: str, durable: str) -> None:
        """Deletes a durable consumer and what it had pending. `ConsumerBusy` while another
        connection consumes it, `NotFound` if there is none; a `Consumer` of this client
        for it ends."""
        C.require(self.features, "consumer_delete")
        self._call({"type": "consumer_delete", "stream": stream, "durable": durable})
        consumer = self._forget_consumer(stream, durable)
        if consumer is not None:
            consumer._end(Closed("the consumer was deleted"), orderly=True)

    # ── plumbing ────────────────────────────────────────────────────────

    def _send(self, frame: Mapping[str, Any]) -> None:
        data = encode(frame, self.max_frame)
        with self._write_lock:
            if self._closed or self._closing:
                raise self._closed_error()
            try:
                self._sock.sendall(data)
            except OSError as e:
                raise Closed(f"cannot write to the bus: {e}") from None

    def _start_call(self, frame: Dict[str, Any], on_answer: Optional[Callable[[Frame], None]],
                    multi: bool) -> Tuple[int, Call]:
        rid = next(self._rids)
        frame["rid"] = rid
        call = Call(queue.Queue(), frame, on_answer, multi)
        self._add_call(rid, call)
        try:
            self._send(frame)
        except BaseException:
            self._drop_call(rid)
            raise
        return rid, call

    def _call(self, frame: Dict[str, Any], timeout: Optional[float] = None,
              on_answer: Optional[Callable[[Frame], None]] = None) -> Frame:
        """Sends a request with a fresh rid; returns its answer, raising error answers."""
        wait = self.timeout if timeout is None else timeout
        rid, call = self._start_call(frame, on_answer, multi=False)
        try:
            answer = call.answers.get(timeout=wait)
        except queue.Empty:
            self._drop_call(rid)
            raise Timeout(f"no answer to `{frame['type']}` within {wait:g} s") from None
        if answer is END:
            raise self._closed_error()
        if answer.get("type") == "error":
            raise error_from_frame(answer)
        return cast(Frame, answer)

    def _call_many(self, frame: Dict[str, Any], wait: float) -> List[Frame]:
        """Sends a gathering request; returns its answers up to the first that is not a
        `response`."""
        rid, call = self._start_call(frame, None, multi=True)
        deadline = time.monotonic() + wait
        answers: List[Frame] = []
        try:
            while True:
                try:
                    answer = call.answers.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise Timeout(f"no end to the gather within {wait:g} s") from None
                if answer is END:
                    raise self._closed_error()
                answers.append(answer)
                if answer.get("type") != "response":
                    return answers
        finally:
            self._drop_call(rid)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(C.HEARTBEAT_INTERVAL):
            try:
                self._send({"type": "ping"})
            except HookbusError:
                return

    def _read_loop(self) -> None:
        decoder = FrameDecoder(MAX_FRAME)
        reason: Optional[HookbusError] = None
        try:
            while True:
                try:
                    data = self._sock.recv(1 << 16)
                except OSError as e:  # there is no read timeout: this is a real failure
                    reason = Closed(f"cannot read from the bus: {e}")
                    break
                if not data:
                    break
                decoder.max_frame = max(self.max_frame, MAX_FRAME)
                decoder.feed(data)
                while True:
                    try:
                        frame = decoder.next()
                    except BadFrame as e:
                        log.warning("the bus sent a bad frame: %s", e)
                        continue
                    if frame is None:
                        break
                    try:
                        self._dispatch(frame)
                    except Exception:
                        log.exception("could not dispatch a %r frame", frame.get("type"))
        except HookbusError as e:  # FrameTooLarge: the stream is lost
            reason = e
        finally:
            self._stop.set()
            self._disconnected(reason)


# ── hermes-bus 0.7 compatibility ────────────────────────────────────────────

RECONNECT_DELAY_INITIAL = 1.0
RECONNECT_DELAY_MAX = 30.0


class BusClient:
    """hermes-bus 0.7's long-lived client: register an endpoint, `send`, `poll`.

    Same constructor and methods as hermes's, speaking only the hermes protocol,
    and it reconnects (1 s backoff growing to 30 s) and registers again when the
    connection breaks. Unlike hermes's it does not reconnect every idle second:
    the reader waits without a timeout. It does not start a daemon either, and
    stops reconnecting after `replaced` (another client took the name).

    `on_message` (a hookbus addition) receives each message on a thread of its
    own instead of the `poll` queue.
    """

    def __init__(self, endpoint: str, socket_path: Optional[str] = None, *,
                 on_message: Optional[Callable[[Frame], Any]] = None) -> None:
        self.endpoint = endpoint
        self.socket_path = socket_path or C.default_socket_path()
        self.on_message = on_message
        self._sock: Optional[socket.socket] = None
        self._running = False
        self._connected = False
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._message_queue: "queue.Queue[Frame]" = queue.Queue()
        self._wake = threading.Event()
        self._reconnecting = False
        self._local_id = uuid.uuid4().hex[:8]
        self._bus_session_id: Optional[str] = None
        self._callback_queue: "queue.Queue[Optional[Frame]]" = queue.Queue()
        self._callback_thread: Optional[threading.Thread] = None
        self._heartbeat_thread: Optional[threading.Thread] = None

    @property
    def local_id(self) -> str:
        """Client local identifier (8 hex chars)."""
        return self._local_id

    @property
    def bus_session_id(self) -> Optional[str]:
        """The session id the bus gave at registration."""
        return self._bus_session_id

    def connect(self) -> bool:
        """Connects and registers; False (and retrying in the background) if the bus is down."""
        with self._lock:
            if self._connected:
                return True
            self._running = True
            self._wake.clear()
        if self._heartbeat_thread is None or not self._heartbeat_thread.is_alive():
            self._heartbeat_thread = threading.Thread(target=self._heartbeat_loop, daemon=True,
                                                      name="hookbus-bus-heartbeat")
            self._heartbeat_thread.start()
        if self.on_message is not None and (self._callback_thread is None
                                            or not self._callback_thread.is_alive()):
            self._callback_thread = threading.Thread(target=self._callback_loop, daemon=True,
                                                     name="hookbus-bus-callbacks")
            self._callback_thread.start()
        if self._open():
            return True
        self._start_reconnect_thread()
        return False

    def disconnect(self) -> None:
        """Disconnects and stops every background thread."""
        with self._lock:
            self._running = False
            self._connected = False
            sock, self._sock = self._sock, None
        self._wake.set()
        self._callback_queue.put(None)
        if sock is not None:
            _shutdown(sock)

    def is_connected(self) -> bool:
        """Whether the connection is up (and registered)."""
        with self._lock:
            return self._connected

    def send(self, to: str, body: Any) -> bool:
        """Sends a message; True if it was written to the socket."""
        frame = C.message_frame(to, body, self.endpoint)
        with self._lock:
            sock = self._sock if self._connected else None
        if sock is None:
            return False
        try:
            data = encode(frame)
            with self._write_lock:
                sock.sendall(data)
            return True
        except (OSError, ValueError, TypeError, HookbusError):
            return False

    def poll(self) -> List[Frame]:
        """Every message received since the last poll (perhaps none); never blocks."""
        msgs: List[Frame] = []
        while True:
            try:
                msgs.append(self._message_queue.get_nowait())
            except queue.Empty:
                return msgs

    # ── internals ───────────────────────────────────────────────────────

    def _open(self) -> bool:
        """Connects, registers and starts a reader for the new connection."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        decoder = FrameDecoder()
        try:
            sock.settimeout(5.0)
            sock.connect(self.socket_path)
            sock.sendall(encode({"type": "register", "endpoint": self.endpoint}))
            sock.settimeout(3.0)
            reply = _read_one(sock, decoder)
            if reply is not None and reply.get("type") == "registered":
                self._bus_session_id = reply.get("session_id")
            elif reply is not None:
                self._deliver(reply)
            sock.settimeout(None)
        except (OSError, HookbusError):
            sock.close()
            return False
        with self._lock:
            if not self._running:
                sock.close()
                return False
            self._sock = sock
            self._connected = True
        threading.Thread(target=self._recv_loop, args=(sock, decoder), daemon=True,
                         name="hookbus-bus-reader").start()
        return True

    def _start_reconnect_thread(self) -> None:
        with self._lock:
            if self._reconnecting or not self._running:
                return
            self._reconnecting = True
        threading.Thread(target=self._reconnect_loop, daemon=True,
                         name="hookbus-bus-reconnect").start()

    def _reconnect_loop(self) -> None:
        delay = RECONNECT_DELAY_INITIAL
        try:
            while self._running:
                if self._wake.wait(delay):
                    return
                if self._open():
                    return
                delay = min(delay * 1.5, RECONNECT_DELAY_MAX)
        finally:
            with self._lock:
                self._reconnecting = False

    def _recv_loop(self, sock: socket.socket, decoder: FrameDecoder) -> None:
        replaced = False
        try:
            while True:
                while True:
                    try:
                        msg = decoder.next()
                    except BadFrame:
                        continue
                    if msg is None:
                        break
                    if msg.get("type") == "pong":
                        continue  # heartbeat answer, not for the application
                    if msg.get("type") == "error" and msg.get("code") == "replaced":
                        replaced = True
                    self._deliver(msg)
                data = sock.recv(1 << 16)  # no timeout: an idle bus is not a broken one
                if not data:
                    break
                decoder.feed(data)
        except (OSError, HookbusError):
            pass
        with self._lock:
            current = self._sock is sock
            if current:
                self._sock = None
                self._connected = False
            if replaced:
                self._running = False
        if replaced:
            self._wake.set()
        _shutdown(sock)
        if current and self._running:
            self._start_reconnect_thread()

    def _deliver(self, msg: Frame) -> None:
        if self.on_message is not None:
            self._callback_queue.put(msg)
        else:
            self._message_queue.put(msg)

    def _callback_loop(self) -> None:
        while True:
            msg = self._callback_queue.get()
            if msg is None:
                if not self._running:
                    return
                continue
            try:
                assert self.on_message is not None
                self.on_message(msg)
            except Exception:
                log.exception("on_message failed")

    def _heartbeat_loop(self) -> None:
        while not self._wake.wait(C.HEARTBEAT_INTERVAL):
            with self._lock:
                sock = self._sock if self._connected else None
            if sock is not None:
                try:
                    with self._write_lock:
                        sock.sendall(encode({"type": "ping"}))
                except OSError:
                    pass  # the reader sees the break and reconnects


def _read_one(sock: socket.socket, decoder: FrameDecoder) -> Optional[Frame]:
    """Reads until one frame is whole; None if the connection ends first."""
    while True:
        frame = decoder.next()
        if frame is not None:
            return frame
        data = sock.recv(1 << 16)
        if not data:
            return None
        decoder.feed(data)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def send_message(to: str, body: Any, socket_path: Optional[str] = None,
                 from_ep: str = "anonymous") -> bool:
    """Connects, sends one message anonymously, disconnects (hermes-bus's signature).

    True if the bus took it. False if the bus is not running, `to` names no
    endpoint, or a filter hook dropped it. A hookbus daemon acknowledges at once;
    a hermes-bus server says nothing on success, so this waits 1 s there, as
    hermes's own does.
    """
    msg = C.message_frame(to, body, from_ep)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5.0)
        sock.connect(socket_path or C.default_socket_path())
        hello = {"type": "hello", "protocol": C.PROTOCOL, "features": ["acks"]}
        sock.sendall(encode(hello) + encode(msg))
        decoder = FrameDecoder()
        deadline = time.monotonic() + 1.0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return True  # no answer: a hermes-bus server, which answers only errors
            sock.settimeout(left)
            try:
                reply = _read_one(sock, decoder)
            except socket.timeout:
                return True
            if reply is None:
                return True
            if reply.get("id") != msg["id"]:
                continue  # welcome
            if reply.get("type") == "error":
                return False
            if reply.get("type") == "ack":
                return reply.get("dropped_by") is None
    except (OSError, HookbusError):
        return False
    finally:
        sock.close()
