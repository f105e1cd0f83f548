"""The asyncio client: `AsyncClient`, made with `await connect(...)`.

    async with await connect(name="worker") as bus:
        sub = await bus.subscribe("build.*.done")
        async for event in sub:
            ...

It does what `hookbus.Client` does, with coroutines: one reader task sorts the
frames it reads into queues and never writes, a heartbeat task pings every 30 s,
and callbacks and service handlers (plain functions or coroutine functions) run
in tasks of their own, one per subscription or service.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import time
from typing import (Any, AsyncIterator, Awaitable, Callable, Dict, Iterable, List, Mapping,
                    Optional, Sequence, Set, Tuple, Union, cast)

from . import _common as C
from ._core import END, Call, Router, StreamBase
from ._frame import MAX_FRAME, decode, encode, payload_length
from .errors import (BadFrame, Closed, HookbusError, NoSuchSubscription, NotFound, Timeout,
                     error_from_frame)

log = logging.getLogger("hookbus")

Frame = Dict[str, Any]
#: A `serve` handler: `handler(body, request_frame)` returns (or resolves to) the reply's body.
AsyncHandler = Callable[[Any, Frame], Union[Any, Awaitable[Any]]]
#: A subscription callback: a function or a coroutine function of the frame.
AsyncCallback = Callable[[Frame], Union[Any, Awaitable[Any]]]


async def _get(queue: "asyncio.Queue[Any]", timeout: Optional[float]) -> Any:
    """The next item, at once if there is one; `asyncio.TimeoutError` after `timeout` s."""
    try:
        return queue.get_nowait()
    except asyncio.QueueEmpty:
        pass
    if timeout is None:
        return await queue.get()
    if timeout <= 0:
        raise asyncio.TimeoutError
    return await asyncio.wait_for(queue.get(), timeout)


class _AStream(StreamBase):
    """A stream read from coroutines."""

    def __init__(self) -> None:
        super().__init__()
        self._queue: "asyncio.Queue[Any]" = asyncio.Queue()

    async def next(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The next frame; None if `timeout` seconds pass first (None: wait for ever).

        Raises `Closed` once the stream has ended and is empty, or the error that
        ended the connection.
        """
        try:
            item = await _get(self._queue, timeout)
        except asyncio.TimeoutError:
            return None
        if item is END:
            self._queue.put_nowait(END)
            raise self._ended_error()
        return cast(Frame, item)

    def __aiter__(self) -> AsyncIterator[Frame]:
        """Yields frames until the stream ends; raises if the connection was lost."""
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Frame]:
        while True:
            try:
                frame = await self.next()
            except HookbusError:
                if self._orderly:
                    return
                raise
            if frame is not None:
                yield frame


class AsyncSubscription(_AStream):
    """A subscription: `async for` it, or `await next(timeout)`, for its `event` frames.

    As with `Subscription`, retained values come first, and in a session with
    `rpc` requests on matching subjects arrive too, as `request` frames.
    """

    def __init__(self, client: "AsyncClient", pattern: str, queue: Optional[str],
                 callback: Optional[AsyncCallback] = None) -> None:
        super().__init__()
        self._client = client
        self.pattern = pattern
        self.queue = queue
        #: The bus's number for this subscription (set when `subscribed` arrives).
        self.sid: Optional[int] = None
        self._callback = callback

    def _start(self) -> None:
        if self._callback is not None:
            self._client._spawn(self._run())

    async def _run(self) -> None:
        assert self._callback is not None
        try:
            async for frame in self:
                try:
                    result = self._callback(frame)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("callback for %r failed", self.pattern)
        except HookbusError as e:
            log.debug("subscription %r ended: %s", self.pattern, e)

    async def unsubscribe(self, timeout: Optional[float] = None) -> None:
        """Ends the subscription; frames already received can still be read."""
        if self.ended:
            return
        try:
            if self.sid is not None and not self._client.closed:
                await self._client._call({"type": "unsubscribe", "sid": self.sid}, timeout)
        except Closed:
            pass
        finally:
            self._client._forget(self.sid, self)
            self._end(Closed("unsubscribed"), orderly=True)

    async def __aenter__(self) -> "AsyncSubscription":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.unsubscribe()


class AsyncService(AsyncSubscription):
    """A responder: awaits its handler for each request, one at a time, and replies.

    If the handler raises, the error is logged and no reply is sent.
    """

    def __init__(self, client: "AsyncClient", pattern: Optional[str], queue: Optional[str],
                 handler: AsyncHandler) -> None:
        super().__init__(client, pattern or "", queue, callback=self._handle)
        self.handler = handler

    def _push(self, frame: Frame) -> None:
        if frame.get("type") == "request":  # events on the subject are not for a service
            super()._push(frame)

    async def _handle(self, frame: Frame) -> None:
        body = self.handler(frame.get("body"), frame)
        if inspect.isawaitable(body):
            body = await body
        try:
            await self._client.reply(frame, body)
        except HookbusError as e:
            log.warning("reply to %r failed: %s", frame.get("subject"), e)

    async def stop(self, timeout: Optional[float] = None) -> None:
        """Stops serving (the same as `unsubscribe`)."""
        await self.unsubscribe(timeout)


class AsyncInterest(_AStream):
    """Who subscribes to subjects overlapping a pattern: `subscriptions` when asked,
    then (iterating) that list as `interest_change` adds, then each change."""

    def __init__(self, client: "AsyncClient", pattern: str) -> None:
        super().__init__()
        self._client = client
        self.pattern = pattern
        self.iid: Optional[int] = None
        self.subscriptions: List[Frame] = []

    async def close(self, timeout: Optional[float] = None) -> None:
        """Stops watching (`uninterest`)."""
        if self.ended:
            return
        try:
            if self.iid is not None and not self._client.closed:
                await self._client._call({"type": "uninterest", "iid": self.iid}, timeout)
        except Closed:
            pass
        finally:
            self._client._forget_interest(self.iid, self)
            self._end(Closed("the interest is closed"), orderly=True)


class AsyncMonitor(_AStream):
    """The session's monitor: `async for` its `monitored` frames; `missed` counts gaps."""

    def __init__(self, client: "AsyncClient") -> None:
        super().__init__()
        self._client = client
        self.sid: Optional[int] = None

    def close(self) -> None:
        """Stops reading (locally: the protocol has no request that ends a monitor)."""
        self._client._forget(self.sid, self)
        self._end(Closed("the monitor is closed"), orderly=True)


class AsyncKvWatch(_AStream):
    """A KV watch: `async for` its frames, or `await next(timeout)`: the current values
    as `kv_change` puts, then `kv_synced`, then each change (see `KvWatch`). Reading
    raises `WatchLost` if the bus dropped the watch for reading too slowly."""

    def __init__(self, client: "AsyncClient", pattern: str) -> None:
        super().__init__()
        self._client = client
        self.pattern = pattern
        #: The bus's number for this watch (set when `kv_watching` arrives).
        self.wid: Optional[int] = None

    async def close(self, timeout: Optional[float] = None) -> None:
        """Stops watching (`kv_unwatch`); frames already received can still be read."""
        if self.ended:
            return
        try:
            if self.wid is not None and not self._client.closed:
                await self._client._call({"type": "kv_unwatch", "wid": self.wid}, timeout)
        except (Closed, NoSuchSubscription):
            pass  # the connection, or the watch, ended already
        finally:
            self._client._forget_watch(self.wid, self)
            self._end(Closed("the watch is closed"), orderly=True)

    async def __aenter__(self) -> "AsyncKvWatch":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncReplay(_AStream):
    """A replay of a stream: `async for` its `stream_event` frames, or `await
    next(timeout)`, in seq order, up to `last_seq` (see `Replay`). Iterating stops
    after the last one, when `replay_end` arrives: that frame is then `end`."""

    def __init__(self, client: "AsyncClient", stream: str, subject: Optional[str]) -> None:
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
        """Stops reading (locally: the protocol has no request that ends a replay)."""
        self._client._forget_replay(self.replay, self)
        self._end(Closed("the replay is closed"), orderly=True)

    async def __aenter__(self) -> "AsyncReplay":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class AsyncConsumer(_AStream):
    """A durable consumer this client consumes: `async for` its `stream_event` frames, or
    `await next(timeout)`; acknowledge each with `ack`, `nak`, `term` or `progress`,
    and `await close()` (or leave an `async with` block) to stop consuming. `info` is
    the `consuming` answer. See `Consumer`."""

    def __init__(self, client: "AsyncClient", stream: str, durable: str) -> None:
        super().__init__()
        self._client = client
        self.stream = stream
        self.durable = durable
        #: The `consuming` answer (set when it arrives).
        self.info: Frame = {}

    async def ack(self, seq: C.Seq, timeout: Optional[float] = None) -> None:
        """Done with a message (its seq, or the frame): it is never delivered again."""
        await self._client.stream_ack(self.stream, self.durable, seq, "ack", timeout=timeout)

    async def nak(self, seq: C.Seq, delay: Optional[float] = None,
                  timeout: Optional[float] = None) -> None:
        """Not done: deliver the message again, after `delay` seconds (default at once)."""
        await self._client.stream_ack(self.stream, self.durable, seq, "nak", delay, timeout)

    async def term(self, seq: C.Seq, timeout: Optional[float] = None) -> None:
        """Never deliver the message again, though not done."""
        await self._client.stream_ack(self.stream, self.durable, seq, "term", timeout=timeout)

    async def progress(self, seq: C.Seq, timeout: Optional[float] = None) -> None:
        """Still working on the message: its ack wait starts over."""
        await self._client.stream_ack(self.stream, self.durable, seq, "progress",
                                      timeout=timeout)

    async def close(self, timeout: Optional[float] = None) -> None:
        """Stops consuming (`unconsume`): what is not acknowledged goes to whoever consumes
        it next; frames already received can still be read."""
        if self.ended:
            return
        try:
            if not self._client.closed:
                await self._client._call({"type": "unconsume", "stream": self.stream,
                                          "durable": self.durable}, timeout)
        except (Closed, NotFound):
            pass  # the connection ended, or this one does not consume it any more
        finally:
            self._client._forget_consumer(self.stream, self.durable, self)
            self._end(Closed("the consumer is closed"), orderly=True)

    async def __aenter__(self) -> "AsyncConsumer":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def connect(socket_path: Optional[str] = None, name: Optional[str] = None,
                  features: Sequence[str] = C.DEFAULT_FEATURES,
                  will: Optional[Mapping[str, Any]] = None,
                  timeout: float = 5.0) -> "AsyncClient":
    """Connects, says `hello` and, given a `name`, registers it (see `AsyncClient`)."""
    return await AsyncClient.connect(socket_path, name, features, will, timeout)


class AsyncClient(Router):
    """A hookbus connection speaking protocol 2, for asyncio. Make one with `connect`.

    Used as an async context manager, it says `bye` on a normal exit (no will) and
    just closes when an exception leaves the block (the will is published).
    """

    _messages: _AStream

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 socket_path: str, timeout: float) -> None:
        super().__init__()
        self.socket_path = socket_path
        self.timeout = timeout
        #: Registered endpoint name, and the bus's session id for it.
        self.endpoint: Optional[str] = None
        self.session_id: Optional[str] = None
        #: The bus's name and frame limit, and the whole `welcome` frame.
        self.server: Optional[str] = None
        self.max_frame = MAX_FRAME
        self.welcome: Frame = {}
        self._reader = reader
        self._writer = writer
        self._messages = _AStream()
        self._rids = itertools.count(1)
        self._write_lock = asyncio.Lock()
        self._tasks: Set["asyncio.Task[Any]"] = set()
        self._reader_task = asyncio.ensure_future(self._read_loop())
        self._heartbeat_task: Optional["asyncio.Task[Any]"] = None

    @classmethod
    async def connect(cls, socket_path: Optional[str] = None, name: Optional[str] = None,
                      features: Sequence[str] = C.DEFAULT_FEATURES,
                      will: Optional[Mapping[str, Any]] = None,
                      timeout: float = 5.0) -> "AsyncClient":
        """Connects, says `hello` (waiting up to `timeout` for `welcome`), registers `name`."""
        path = socket_path or C.default_socket_path()
        hello = C.hello_frame(features, will)
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
        client = cls(reader, writer, path, timeout)
        try:
            try:
                client.welcome = await client._call(hello, timeout)
            except Timeout:
                raise Timeout(f"no `welcome` from {path} within {timeout:g} s: not a hookbus "
                              "daemon? (hermes-bus never answers `hello`)") from None
            client._welcomed(client.welcome)
            client.server = client.welcome.get("server")
            client.max_frame = int(client.welcome.get("max_frame") or MAX_FRAME)
            if name is not None:
                await client.register(name)
        except BaseException:
            await client.close()
            raise
        client._heartbeat_task = asyncio.ensure_future(client._heartbeat_loop())
        return client

    # ── connection ──────────────────────────────────────────────────────

    async def register(self, name: str) -> str:
        """Registers an endpoint name; returns the session id."""
        answer = await self._call({"type": "register", "endpoint": name})
        self.endpoint = name
        self.session_id = answer.get("session_id")
        return str(self.session_id)

    async def bye(self, timeout: Optional[float] = None) -> None:
        """Says `bye` (the bus drops the will), then closes."""
        try:
            if not self._closed:
                await self._call({"type": "bye"}, timeout)
        except HookbusError as e:
            log.debug("bye: %s", e)
        finally:
            await self.close()

    async def close(self) -> None:
        """Closes the connection without `bye`: the bus publishes the will, if any."""
        if self._closing:
            return
        self._closing = True
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
        self._writer.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._reader_task), self.timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self._reader_task.cancel()
        try:
            await self._writer.wait_closed()
        except (OSError, asyncio.CancelledError):
            pass

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, exc_type: Optional[type], *exc: object) -> None:
        if exc_type is None:
            await self.bye()
        else:
            await self.close()

    # ── hermes messaging ────────────────────────────────────────────────

    async def send(self, to: Optional[str], body: Any) -> str:
        """Sends a message to an endpoint (None: broadcast); returns its id."""
        frame = C.message_frame(to, body, self.endpoint)
        await self._send(frame)
        return str(frame["id"])

    async def recv(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The next `message` frame (or direct `request` nobody serves); None on timeout."""
        return await self._messages.next(timeout)

    async def ping(self) -> float:
        """Pings the bus; returns the round trip in seconds."""
        start = time.monotonic()
        await self._call({"type": "ping"})
        return time.monotonic() - start

    async def status(self) -> Frame:
        """The bus's `status` answer."""
        return await self._call({"type": "status"})

    async def list_endpoints(self) -> Dict[str, str]:
        """Registered endpoints and their session ids."""
        return dict((await self._call({"type": "list_endpoints"})).get("endpoints") or {})

    # ── topics ──────────────────────────────────────────────────────────

    async def publish(self, subject: str, body: Any, retain: bool = False) -> None:
        """Publishes on a subject; with `retain` the bus keeps it (a retained None clears it)."""
        C.require(self.features, "publish")
        await self._send({"type": "publish", "subject": subject, "body": body,
                          "retain": bool(retain)})

    async def subscribe(self, pattern: str, queue: Optional[str] = None,
                        on_full: str = "pause",
                        callback: Optional[AsyncCallback] = None) -> AsyncSubscription:
        """Subscribes to a pattern, in queue group `queue`; with `callback`, frames go to
        it (in a task of the subscription's own) instead of being queued."""
        C.require(self.features, "subscribe")
        sub = AsyncSubscription(self, pattern, queue, callback)
        await self._call(C.subscribe_frame(pattern, queue, on_full),
                         on_answer=self._sub_installer(sub))
        sub._start()
        return sub

    async def interest(self, pattern: str) -> AsyncInterest:
        """Watches the subscriptions whose patterns overlap `pattern`."""
        C.require(self.features, "interest")
        watch = AsyncInterest(self, pattern)
        await self._call({"type": "interest", "subject": pattern},
                         on_answer=self._interest_installer(watch))
        return watch

    # ── request / reply ─────────────────────────────────────────────────

    async def request(self, subject: Optional[str] = None, body: Any = None,
                      to: Optional[str] = None, timeout: float = 5.0) -> Any:
        """Sends a request to a subject's responders or an endpoint; returns the reply's body
        (raising `NoResponders`, `Timeout`, `ResponderGone`, `Dropped`, ...)."""
        C.require(self.features, "request")
        frame = C.request_frame(subject, to, body, timeout)
        return (await self._call(frame, timeout + C.GRACE)).get("body")

    async def gather(self, subject: str, body: Any = None, max: int = 1024,
                     window: float = 1.0, timeout: Optional[float] = None) -> List[Frame]:
        """Sends a request to every responder; returns up to `max` `response` frames that
        came within `window` seconds (see `Client.gather`)."""
        C.require(self.features, "request")
        frame = C.gather_frame(subject, body, max, window, timeout)
        wait = (window if timeout is None else timeout) + C.GRACE
        responses, error = self._gather_result(await self._call_many(frame, wait))
        if error is not None:
            raise error
        return responses

    async def serve(self, pattern: Optional[str], handler: AsyncHandler,
                    queue: Optional[str] = None) -> AsyncService:
        """Answers requests on `pattern` (None: those addressed to this endpoint) with
        `handler(body, request_frame)`'s result; see `Client.serve`."""
        C.require(self.features, "reply")
        service = AsyncService(self, pattern, queue, handler)
        if pattern is None:
            with self._lock:
                if self._direct is not None and not self._direct.ended:
                    raise ValueError("requests to this endpoint are served already")
                self._direct = service
        else:
            await self._call(C.subscribe_frame(pattern, queue, "pause"),
                             on_answer=self._sub_installer(service))
        service._start()
        return service

    async def reply(self, request: Union[Mapping[str, Any], str], body: Any) -> None:
        """Answers a request frame (or a message with `reply_to`, or a `reply_to` string)."""
        reply_to = C.reply_to_of(request)
        if "rpc" in self.features:
            await self._send({"type": "reply", "reply_to": reply_to, "body": body})
        else:
            await self._send(C.message_frame(reply_to, body, self.endpoint))

    # ── monitor ─────────────────────────────────────────────────────────

    async def monitor(self, subject: Optional[str] = None,
                      kinds: Optional[Iterable[str]] = None) -> AsyncMonitor:
        """Watches every frame the bus routes; a second call replaces the first."""
        C.require(self.features, "monitor")
        mon = AsyncMonitor(self)
        await self._call(C.monitor_frame(subject, kinds), on_answer=self._monitor_installer(mon))
        return mon

    # ── KV ──────────────────────────────────────────────────────────────

    async def kv_put(self, key: str, value: Any, ttl: Optional[float] = None,
                     if_revision: Optional[int] = None) -> int:
        """Stores a JSON value under a key; returns its new revision (see `Client.kv_put`;
        `RevisionMismatch` carries the current `revision`)."""
        C.require(self.features, "kv_put")
        return int((await self._call(C.kv_put_frame(key, value, ttl, if_revision)))["revision"])

    async def kv_get(self, key: str) -> Optional[Frame]:
        """The `kv_value` frame of a key, or None if the key does not exist."""
        C.require(self.features, "kv_get")
        try:
            return await self._call({"type": "kv_get", "key": key})
        except NotFound:
            return None

    async def kv_delete(self, key: str, if_revision: Optional[int] = None) -> int:
        """Deletes a key; returns the deletion's revision (`NotFound`, `RevisionMismatch`)."""
        C.require(self.features, "kv_delete")
        return int((await self._call(C.kv_delete_frame(key, if_revision)))["revision"])

    async def kv_keys(self, prefix: str = "") -> C.KeyList:
        """The keys starting with `prefix`, sorted (`more`: the bus left some out)."""
        C.require(self.features, "kv_keys")
        return C.key_list(await self._call({"type": "kv_keys", "prefix": prefix}))

    async def kv_watch(self, pattern: str, snapshot: bool = True) -> AsyncKvWatch:
        """Watches the keys matching `pattern`: the current values (unless `snapshot` is
        False), `kv_synced`, then every change."""
        C.require(self.features, "kv_watch")
        watch = AsyncKvWatch(self, pattern)
        await self._call({"type": "kv_watch", "key": pattern, "snapshot": bool(snapshot)},
                         on_answer=self._watch_installer(watch))
        return watch

    # ── jobs ────────────────────────────────────────────────────────────

    async def job_publish(self, goal: str, payload: Any = None,
                          idempotency_key: Optional[str] = None, priority: int = 0,
                          delay: Optional[float] = None, max_attempts: Optional[int] = None,
                          backoff: Optional[float] = None) -> Tuple[str, bool]:
        """Queues a job for `goal`; returns `(job_id, duplicate)` (see `Client.job_publish`)."""
        C.require(self.features, "job_publish")
        answer = await self._call(C.job_publish_frame(goal, payload, idempotency_key, priority,
                                                      delay, max_attempts, backoff))
        return str(answer["job"]), bool(answer.get("duplicate"))

    async def job_claim(self, pattern: str, lease: float = 60.0,
                        wait: float = 0.0) -> Optional[Frame]:
        """Claims the first ready job matching `pattern` for `lease` seconds, waiting up to
        `wait` seconds; returns the `job` frame, or None if none was ready in time."""
        C.require(self.features, "job_claim")
        frame = C.job_claim_frame(pattern, lease, wait)
        answer = await self._call(frame, frame["wait_ms"] / 1000 + self.timeout)
        return answer if answer.get("type") == "job" else None

    async def job_extend(self, job: Union[Mapping[str, Any], str], lease: Optional[str] = None,
                         duration: float = 60.0) -> int:
        """Extends a job's lease to `duration` seconds from now; returns `lease_until_ms`
        (`LeaseLost` if the lease is not the job's any more)."""
        C.require(self.features, "job_extend")
        frame = C.job_lease_frame("job_extend", job, lease)
        frame["lease_ms"] = C.duration_ms(duration, "duration", positive=True)
        return int((await self._call(frame))["lease_until_ms"])

    async def job_fulfill(self, job: Union[Mapping[str, Any], str], lease: Optional[str] = None,
                          result: Any = None) -> None:
        """Marks a claimed job done, with an optional `result` (`LeaseLost`)."""
        C.require(self.features, "job_fulfill")
        frame = C.job_lease_frame("job_fulfill", job, lease)
        if result is not None:
            frame["result"] = result
        await self._call(frame)

    async def job_fail(self, job: Union[Mapping[str, Any], str], lease: Optional[str] = None,
                       error: Optional[str] = None, retry: bool = True) -> Frame:
        """Gives a claimed job up as failed; returns `job_failed` (`state` `queued` or
        `dead`); see `Client.job_fail`."""
        C.require(self.features, "job_fail")
        frame = C.job_lease_frame("job_fail", job, lease)
        if error is not None:
            frame["error"] = str(error)
        frame["retry"] = bool(retry)
        return await self._call(frame)

    async def job_status(self, job: Union[Mapping[str, Any], str]) -> Frame:
        """The `job_info` frame of a job; `NotFound` for an unknown one."""
        C.require(self.features, "job_status")
        return await self._call({"type": "job_status", "job": C.job_id(job)})

    async def job_list(self, state: Optional[str] = None, goal: Optional[str] = None,
                       limit: Optional[int] = None) -> List[Frame]:
        """Jobs as `job_info` frames, oldest first, filtered by state and goal pattern."""
        C.require(self.features, "job_list")
        return list((await self._call(C.job_list_frame(state, goal, limit))).get("jobs") or [])

    async def job_retry(self, job: Union[Mapping[str, Any], str]) -> None:
        """Queues a dead or cancelled job again, its attempts reset."""
        C.require(self.features, "job_retry")
        await self._call({"type": "job_retry", "job": C.job_id(job)})

    async def job_cancel(self, job: Union[Mapping[str, Any], str]) -> None:
        """Cancels a queued, leased or dead job."""
        C.require(self.features, "job_cancel")
        await self._call({"type": "job_cancel", "job": C.job_id(job)})

    # ── streams ─────────────────────────────────────────────────────────

    async def replay(self, stream: str, from_: C.From = "first",
                     subject: Optional[str] = None) -> AsyncReplay:
        """Replays the messages a stream keeps, in seq order, those whose subject matches
        `subject` only, if given, from `from_` ("first", "last", "new", a seq,
        `{"seq": n}`, `{"time_ms": t}`, `{"id": message_id}`); see `Client.replay`
        (`NotFound`, `SeqGone`)."""
        C.require(self.features, "replay")
        replay = AsyncReplay(self, stream, subject)
        await self._call(C.replay_frame(stream, from_, subject),
                         on_answer=self._replay_installer(replay))
        return replay

    async def consume(self, stream: str, durable: str, subject: Optional[str] = None,
                      from_: Optional[C.From] = None, ack_wait: Optional[float] = None,
                      max_deliver: Optional[int] = None,
                      max_ack_pending: Optional[int] = None) -> AsyncConsumer:
        """Consumes (creating it if new) the durable consumer `durable` of a stream; see
        `Client.consume` (`ack_wait` in seconds; `ConsumerBusy`, `NotFound`)."""
        C.require(self.features, "consume")
        consumer = AsyncConsumer(self, stream, durable)
        await self._call(C.consume_frame(stream, durable, subject, from_, ack_wait, max_deliver,
                                         max_ack_pending),
                         on_answer=self._consumer_installer(consumer))
        return consumer

    async def stream_ack(self, stream: str, durable: str, seq: C.Seq, op: str = "ack",
                         delay: Optional[float] = None, timeout: Optional[float] = None) -> Frame:
        """Says what became of message `seq` of a durable consumer ("ack", "nak" after
        `delay` seconds, "term", "progress"); returns `stream_acked` (see
        `Client.stream_ack`)."""
        C.require(self.features, "stream_ack")
        return await self._call(C.stream_ack_frame(stream, durable, seq, op, delay), timeout)

    async def stream_info(self, stream: str) -> Frame:
        """The `stream_info` frame of a stream, with its `consumers`; `NotFound` if unknown."""
        C.require(self.features, "stream_info")
        return await self._call({"type": "stream_info", "stream": stream})

    async def stream_list(self) -> List[Frame]:
        """Every declared stream, as `stream_info` describes it (without consumers)."""
        C.require(self.features, "stream_list")
        return list((await self._call({"type": "stream_list"})).get("streams") or [])

    async def consumer_delete(self, stream: str, durable: str) -> None:
        """Deletes a durable consumer (`ConsumerBusy`, `NotFound`); a consumer of this client
        for it ends."""
        C.require(self.features, "consumer_delete")
        await self._call({"type": "consumer_delete", "stream": stream, "durable": durable})
        consumer = self._forget_consumer(stream, durable)
        if consumer is not None:
            consumer._end(Closed("the consumer was deleted"), orderly=True)

    # ── plumbing ────────────────────────────────────────────────────────

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, frame: Mapping[str, Any]) -> None:
        data = encode(frame, self.max_frame)
        async with self._write_lock:
            if self._closed or self._closing or self._writer.is_closing():
                raise self._closed_error()
            try:
                self._writer.write(data)
                await self._writer.drain()
            except (ConnectionError, OSError) as e:
                raise Closed(f"cannot write to the bus: {e}") from None

    async def _start_call(self, frame: Dict[str, Any],
                          on_answer: Optional[Callable[[Frame], None]],
                          multi: bool) -> Tuple[int, Call]:
        rid = next(self._rids)
        frame["rid"] = rid
        call = Call(asyncio.Queue(), frame, on_answer, multi)
        self._add_call(rid, call)
        try:
            await self._send(frame)
        except BaseException:
            self._drop_call(rid)
            raise
        return rid, call

    async def _call(self, frame: Dict[str, Any], timeout: Optional[float] = None,
                    on_answer: Optional[Callable[[Frame], None]] = None) -> Frame:
        """Sends a request with a fresh rid; returns its answer, raising error answers."""
        wait = self.timeout if timeout is None else timeout
        rid, call = await self._start_call(frame, on_answer, multi=False)
        try:
            answer = await _get(call.answers, wait)
        except asyncio.TimeoutError:
            raise Timeout(f"no answer to `{frame['type']}` within {wait:g} s") from None
        finally:
            self._drop_call(rid)
        if answer is END:
            raise self._closed_error()
        if answer.get("type") == "error":
            raise error_from_frame(answer)
        return cast(Frame, answer)

    async def _call_many(self, frame: Dict[str, Any], wait: float) -> List[Frame]:
        """Sends a gathering request; returns its answers up to the first that is not a
        `response`."""
        rid, call = await self._start_call(frame, None, multi=True)
        deadline = time.monotonic() + wait
        answers: List[Frame] = []
        try:
            while True:
                try:
                    answer = await _get(call.answers, deadline - time.monotonic())
                except asyncio.TimeoutError:
                    raise Timeout(f"no end to the gather within {wait:g} s") from None
                if answer is END:
                    raise self._closed_error()
                answers.append(answer)
                if answer.get("type") != "response":
                    return answers
        finally:
            self._drop_call(rid)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(C.HEARTBEAT_INTERVAL)
            try:
                await self._send({"type": "ping"})
            except HookbusError:
                return

    async def _read_loop(self) -> None:
        reason: Optional[HookbusError] = None
        try:
            while True:
                header = await self._reader.readexactly(4)
                length = payload_length(header, max(self.max_frame, MAX_FRAME))
                payload = await self._reader.readexactly(length)
                try:
                    frame = decode(payload)
                except BadFrame as e:
                    log.warning("the bus sent a bad frame: %s", e)
                    continue
                try:
                    self._dispatch(frame)
                except Exception:
                    log.exception("could not dispatch a %r frame", frame.get("type"))
        except asyncio.IncompleteReadError:
            pass  # the connection ended
        except asyncio.CancelledError:
            pass  # close() gave up waiting for the end of the stream
        except OSError as e:
            reason = Closed(f"cannot read from the bus: {e}")
        except HookbusError as e:  # FrameTooLarge: the stream is lost
            reason = e
        finally:
            if self._heartbeat_task is not None:
                self._heartbeat_task.cancel()
            self._disconnected(reason)
