"""The frame router both clients share: answers to waiting calls by `rid`, and
events, requests, messages, interest changes, KV changes, replayed messages and
durable consumers' messages to their streams.

It only sorts and queues; it never writes to the bus and never blocks, so the
reader (thread or task) that calls `_dispatch` keeps reading whatever happens.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from . import _common as C
from .errors import Closed, HookbusError, WatchLost, error_from_frame

log = logging.getLogger("hookbus")

Frame = Dict[str, Any]

END = object()  # queued after a stream's last frame, and to wake calls when the connection ends


def copy_error(error: HookbusError) -> HookbusError:
    """A fresh exception like `error` (raising one instance twice chains tracebacks)."""
    return type(error)(error.detail, code=error.code, frame=error.frame)


class StreamBase:
    """Frames of one subscription, interest, monitor, KV watch, replay, durable consumer
    or the message queue, in order.

    Subclasses give `_queue` (a `queue.Queue` or an `asyncio.Queue`) and the reading side.
    """

    _queue: Any

    def __init__(self) -> None:
        self._ended: Optional[HookbusError] = None
        self._orderly = False
        #: Frames the bus could not queue for this stream (counted from `gap` frames).
        self.missed = 0

    def _push(self, frame: Frame) -> None:
        self._queue.put_nowait(frame)

    def _end(self, reason: HookbusError, orderly: bool) -> None:
        """Ends the stream after the frames already queued; `orderly`: ended on purpose."""
        if self._ended is None:
            self._orderly = orderly
            self._ended = reason
            self._queue.put_nowait(END)

    def _ended_error(self) -> HookbusError:
        assert self._ended is not None
        return copy_error(self._ended)

    @property
    def ended(self) -> bool:
        """Whether no frame will be added any more (some may still be queued)."""
        return self._ended is not None


class Call:
    """A request waiting for its answer (or answers, for a gather)."""

    __slots__ = ("answers", "on_answer", "multi", "expect")

    def __init__(self, answers: Any, frame: Frame, on_answer: Optional[Callable[[Frame], None]],
                 multi: bool) -> None:
        self.answers = answers  # a queue.Queue or an asyncio.Queue
        self.on_answer = on_answer
        self.multi = multi
        # The answer's type, for a protocol 1 bus, which does not echo `rid`.
        self.expect = C.LEGACY_ANSWERS.get(frame["type"])


class Router:
    """State and frame sorting shared by `Client` and `AsyncClient`."""

    _messages: StreamBase

    def __init__(self) -> None:
        #: Error frames that answered no request (a `retained_full`, say), newest last.
        self.errors: Deque[HookbusError] = deque(maxlen=256)
        #: Granted features, from `welcome`.
        self.features: List[str] = []
        self._lock = threading.Lock()
        self._pending: Dict[Any, Call] = {}
        self._sinks: Dict[Any, StreamBase] = {}
        self._interests: Dict[Any, StreamBase] = {}
        self._watches: Dict[Any, StreamBase] = {}
        self._replays: Dict[Any, StreamBase] = {}
        # Durable consumers this connection consumes, by (stream, durable).
        self._consumers: Dict[Tuple[str, str], StreamBase] = {}
        self._direct: Optional[StreamBase] = None
        self._monitor: Optional[StreamBase] = None
        self._legacy = True  # until `welcome` says protocol 2: answers may lack `rid`
        self._fatal: Optional[HookbusError] = None
        self._closing = False
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self._closed

    def _welcomed(self, welcome: Frame) -> None:
        self.features = [str(f) for f in welcome.get("features") or []]
        self._legacy = int(welcome.get("protocol") or 1) < 2

    def _closed_error(self) -> HookbusError:
        if self._fatal is not None:
            return copy_error(self._fatal)
        return Closed("the connection is closed")

    def _add_call(self, rid: Any, call: Call) -> None:
        with self._lock:
            if self._closed:
                raise self._closed_error()
            self._pending[rid] = call

    def _drop_call(self, rid: Any) -> None:
        with self._lock:
            self._pending.pop(rid, None)

    # Installers, run on the reader when the answer arrives, before the next frame
    # (retained events follow `subscribed` at once).

    def _installer(self, answer_type: str, stream: Any, key: str,
                   table: Dict[Any, StreamBase]) -> Callable[[Frame], None]:
        def install(answer: Frame) -> None:
            if answer.get("type") == answer_type:
                setattr(stream, key, answer.get(key))
                with self._lock:
                    table[answer.get(key)] = stream
        return install

    def _sub_installer(self, sub: Any) -> Callable[[Frame], None]:
        return self._installer("subscribed", sub, "sid", self._sinks)

    def _interest_installer(self, watch: Any) -> Callable[[Frame], None]:
        install = self._installer("interest", watch, "iid", self._interests)

        def on_answer(answer: Frame) -> None:
            if answer.get("type") == "interest":
                watch.subscriptions = C.interest_items(answer)
                for item in watch.subscriptions:
                    watch._push(item)
            install(answer)
        return on_answer

    def _watch_installer(self, watch: Any) -> Callable[[Frame], None]:
        return self._installer("kv_watching", watch, "wid", self._watches)

    def _replay_installer(self, replay: Any) -> Callable[[Frame], None]:
        install = self._installer("replaying", replay, "replay", self._replays)

        def on_answer(answer: Frame) -> None:
            if answer.get("type") == "replaying":
                replay.info = answer
                replay.first_seq = answer.get("first_seq")
                replay.last_seq = answer.get("last_seq")
            install(answer)
        return on_answer

    def _consumer_installer(self, consumer: Any) -> Callable[[Frame], None]:
        def on_answer(answer: Frame) -> None:
            if answer.get("type") != "consuming":
                return
            consumer.info = answer
            key = (consumer.stream, consumer.durable)
            with self._lock:
                old = self._consumers.get(key)
                self._consumers[key] = consumer
            if old is not None and old is not consumer:  # consumed again on this connection
                old._end(Closed("replaced by a new consume of the same durable"), orderly=True)
        return on_answer

    def _monitor_installer(self, mon: Any) -> Callable[[Frame], None]:
        def on_answer(answer: Frame) -> None:
            if answer.get("type") != "monitoring":
                return
            with self._lock:
                old, self._monitor = self._monitor, mon
                if old is not None:
                    self._sinks.pop(getattr(old, "sid", None), None)
                mon.sid = answer.get("sid")
                self._sinks[mon.sid] = mon
            if old is not None and old is not mon:
                old._end(Closed("replaced by a new monitor"), orderly=True)
        return on_answer

    def _forget(self, sid: Any, sink: StreamBase) -> None:
        with self._lock:
            if sid is not None and self._sinks.get(sid) is sink:
                del self._sinks[sid]
            if self._direct is sink:
                self._direct = None
            if self._monitor is sink:
                self._monitor = None

    def _forget_interest(self, iid: Any, watch: StreamBase) -> None:
        with self._lock:
            if iid is not None and self._interests.get(iid) is watch:
                del self._interests[iid]

    def _forget_watch(self, wid: Any, watch: StreamBase) -> None:
        with self._lock:
            if wid is not None and self._watches.get(wid) is watch:
                del self._watches[wid]

    def _forget_replay(self, number: Any, replay: StreamBase) -> None:
        with self._lock:
            if number is not None and self._replays.get(number) is replay:
                del self._replays[number]

    def _forget_consumer(self, stream: str, durable: str,
                         consumer: Optional[StreamBase] = None) -> Optional[StreamBase]:
        """Stops routing a durable consumer's messages (to `consumer` only, if given);
        returns the stream it had."""
        with self._lock:
            current = self._consumers.get((stream, durable))
            if current is None or (consumer is not None and current is not consumer):
                return None
            del self._consumers[(stream, durable)]
            return current

    def _replay_ended(self, replay: StreamBase, frame: Frame) -> None:
        """`replay_end` arrived: the replay's last frame."""
        setattr(replay, "end", frame)
        if frame.get("last_seq") is not None:
            setattr(replay, "last_seq", frame.get("last_seq"))
        replay._end(Closed("the replay has ended"), orderly=True)

    def _legacy_rid(self, frame: Frame) -> Any:
        """The rid of the oldest call a rid-less answer of a protocol 1 bus can answer."""
        kind = frame.get("type")
        if kind == "error" and ("id" in frame or frame.get("code") in C.FATAL_CODES):
            return None  # about a message, or about the connection
        with self._lock:
            for rid, call in self._pending.items():
                if kind == "error" or call.expect == kind:
                    return rid
        return None

    def _dispatch(self, frame: Frame) -> None:
        """Sorts one frame from the bus."""
        kind, key = C.classify(frame)
        if self._legacy and kind in (C.PONG, C.UNSOLICITED, C.OTHER):
            rid = self._legacy_rid(frame)
            if rid is not None:
                kind, key = C.ANSWER, rid
        if kind == C.ANSWER:
            with self._lock:
                call = self._pending.get(key)
                if call is not None and not (call.multi and frame.get("type") == "response"):
                    del self._pending[key]
            if call is None:
                log.debug("answer to no waiting request: %r", frame)
                return
            if call.on_answer is not None:
                call.on_answer(frame)
            call.answers.put_nowait(frame)
        elif kind == C.SID:
            with self._lock:
                sink = self._sinks.get(key)
            if sink is None:
                log.debug("frame for unknown sid %r dropped", key)
            elif frame.get("type") == "gap":
                sink.missed += int(frame.get("missed") or 0)
            else:
                sink._push(frame)
        elif kind == C.IID:
            with self._lock:
                watch = self._interests.get(key)
            if watch is not None:
                watch._push(frame)
        elif kind == C.WID:
            with self._lock:
                kv_watch = self._watches.get(key)
                if kv_watch is not None and frame.get("type") == "kv_unwatched":
                    del self._watches[key]
            if kv_watch is None:
                log.debug("frame for unknown wid %r dropped", key)
            elif frame.get("type") == "kv_unwatched":  # the bus ended the watch
                reason = frame.get("reason")
                kv_watch._end(WatchLost("" if reason is None else str(reason), frame=frame),
                              orderly=False)
            else:
                kv_watch._push(frame)
        elif kind == C.REPLAY:
            with self._lock:
                replay = self._replays.get(key)
                if replay is not None and frame.get("type") == "replay_end":
                    del self._replays[key]
            if replay is None:
                log.debug("frame for unknown replay %r dropped", key)
            elif frame.get("type") == "replay_end":
                self._replay_ended(replay, frame)
            else:
                replay._push(frame)
        elif kind == C.CONSUMER:
            with self._lock:
                consumer = self._consumers.get(key)
            if consumer is None:  # sent before an `unconsume` was answered: delivered again
                log.debug("message for durable %r not consumed here dropped", key)
            else:
                consumer._push(frame)
        elif kind == C.DIRECT_REQUEST:
            with self._lock:
                direct = self._direct
            (direct or self._messages)._push(frame)
        elif kind == C.MESSAGE:
            self._messages._push(frame)
        elif kind == C.UNSOLICITED:
            error = error_from_frame(frame)
            if error.code in C.FATAL_CODES:
                self._fatal = error
            else:
                self.errors.append(error)
            log.warning("%s", error)
        elif kind == C.OTHER:
            log.debug("frame of unknown type %r ignored", frame.get("type"))

    def _disconnected(self, reason: Optional[HookbusError]) -> None:
        """Ends every stream and wakes every waiting call once the connection is gone."""
        if reason is None and not self._closing:
            reason = Closed("the bus closed the connection")
        with self._lock:
            self._closed = True
            if reason is not None and self._fatal is None:
                self._fatal = reason
            pending = list(self._pending.values())
            self._pending.clear()
            sinks: List[StreamBase] = (list(self._sinks.values())
                                       + list(self._interests.values())
                                       + list(self._watches.values())
                                       + list(self._replays.values())
                                       + list(self._consumers.values()))
            if self._direct is not None:
                sinks.append(self._direct)
            self._sinks.clear()
            self._interests.clear()
            self._watches.clear()
            self._replays.clear()
            self._consumers.clear()
        orderly = self._closing and self._fatal is None
        for call in pending:
            call.answers.put_nowait(END)
        for sink in sinks + [self._messages]:
            sink._end(self._closed_error(), orderly)

    def _gather_result(self, answers: List[Frame]) -> Tuple[List[Frame], Optional[HookbusError]]:
        """The responses of a finished gather, and the error to raise, if any."""
        responses = [a for a in answers if a.get("type") == "response"]
        last = answers[-1] if answers else None
        if last is not None and last.get("type") == "error":
            error = error_from_frame(last)
            if error.code not in ("timeout", "responder_gone"):
                return responses, error
        return responses, None
