"""Integration tests against a live hookbus daemon speaking protocol 2.

Point HOOKBUS_SOCKET at its socket:

    hookbus serve --socket /tmp/hb/bus.sock &
    HOOKBUS_SOCKET=/tmp/hb/bus.sock python3 -m unittest discover -s tests -v

Without HOOKBUS_SOCKET the whole module is skipped. Every test uses subjects and
endpoint names of its own, so a daemon others use is fine.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import unittest
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional


import hookbus  # noqa: E402
from hookbus import BusClient, Client, send_message  # noqa: E402
from hookbus.aio import connect  # noqa: E402

SOCKET = os.environ.get("HOOKBUS_SOCKET")


def setUpModule() -> None:
    if not SOCKET:
        raise unittest.SkipTest(
            "HOOKBUS_SOCKET is not set: start a hookbus daemon with protocol 2 and set "
            "HOOKBUS_SOCKET to its socket to run the live tests")


def wait_for(get: Callable[[], Any], timeout: float = 3.0) -> Any:
    """Polls `get` until it returns something truthy; returns it (or the last falsy value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def drain(sub: hookbus.Subscription, quiet: float = 0.3) -> List[Dict[str, Any]]:
    """Every event that arrives until none has for `quiet` seconds."""
    events: List[Dict[str, Any]] = []
    while True:
        event = sub.next(quiet)
        if event is None:
            return events
        events.append(event)


class LiveTest(unittest.TestCase):
    """Base: a fresh prefix for subjects and names, and clients closed after each test."""

    #: Socket of the bus under test; None uses HOOKBUS_SOCKET.
    socket_path: Optional[str] = None

    def setUp(self) -> None:
        self.path = self.socket_path or SOCKET
        self.prefix = "t" + uuid.uuid4().hex[:10]

    def client(self, name: Optional[str] = None, **kwargs: Any) -> Client:
        c = Client(self.path, name=f"{self.prefix}-{name}" if name else None, **kwargs)
        self.addCleanup(c.close)
        return c

    def subject(self, rest: str) -> str:
        return f"{self.prefix}.{rest}"


class TopicsTest(LiveTest):
    def test_publish_subscribe_with_wildcards(self) -> None:
        pub = self.client("pub")
        sub = self.client("sub")
        one = sub.subscribe(self.subject("*.done"))
        rest = sub.subscribe(self.subject(">"))
        pub.publish(self.subject("web.done"), {"ok": True})
        pub.publish(self.subject("web.start"), 1)
        pub.publish(self.subject("a.b.done"), 2)

        got = drain(one)
        self.assertEqual([(e["subject"], e["body"]) for e in got],
                         [(self.subject("web.done"), {"ok": True})])
        self.assertEqual(got[0]["type"], "event")
        self.assertEqual(got[0]["from"], pub.endpoint)
        self.assertEqual(got[0]["sid"], one.sid)
        self.assertEqual([e["body"] for e in drain(rest)], [{"ok": True}, 1, 2])

    def test_unsubscribe_stops_events(self) -> None:
        c = self.client("c")
        sub = c.subscribe(self.subject("x"))
        c.publish(self.subject("x"), 1)
        first = sub.next(2)
        assert first is not None
        self.assertEqual(first["body"], 1)
        sub.unsubscribe()
        c.publish(self.subject("x"), 2)
        self.assertEqual(list(sub), [])
        with self.assertRaises(hookbus.Closed):
            sub.next(0.1)

    def test_queue_group_gives_each_publish_to_one_member(self) -> None:
        pub = self.client("pub")
        members = [self.client(f"m{i}").subscribe(self.subject("jobs.*"), queue="workers")
                   for i in range(2)]
        everyone = self.client("all").subscribe(self.subject("jobs.*"))
        for i in range(10):
            pub.publish(self.subject("jobs.run"), i)

        self.assertEqual([e["body"] for e in drain(everyone)], list(range(10)))
        per_member = [[e["body"] for e in drain(m)] for m in members]
        self.assertEqual(sorted(per_member[0] + per_member[1]), list(range(10)))
        self.assertTrue(all(per_member), f"members take turns: {per_member}")
        for bodies in per_member:
            self.assertEqual(bodies, sorted(bodies), "each member sees publish order")

    def test_retained_value_comes_before_live_events(self) -> None:
        pub = self.client("pub")
        subject = self.subject("config")
        pub.publish(subject, {"v": 1}, retain=True)
        pub.publish(subject, {"v": 2}, retain=True)  # replaces the value
        self.assertGreater(pub.ping(), 0)  # the publishes are routed by now
        sub = self.client("sub").subscribe(self.subject("*"))
        pub.publish(subject, {"v": 3})

        first, second = sub.next(2), sub.next(2)
        assert first is not None and second is not None
        self.assertEqual(first["body"], {"v": 2})
        self.assertTrue(first.get("retained"))
        self.assertEqual(second["body"], {"v": 3})
        self.assertFalse(second.get("retained", False))

        pub.publish(subject, None, retain=True)  # clears the value
        pub.ping()
        late = self.client("late").subscribe(subject)
        self.assertIsNone(late.next(0.3))

    def test_interest_lists_then_follows_subscriptions(self) -> None:
        watcher = self.client("w")
        feed = self.client("feed")
        feed.subscribe(self.subject("quotes.*"))
        watch = watcher.interest(self.subject("quotes.>"))

        def ours(item: Dict[str, Any]) -> bool:  # `>` subscribers elsewhere overlap too
            return str(item["subject"]).startswith(self.prefix)

        def next_change() -> Dict[str, Any]:
            while True:
                item = watch.next(2)
                assert item is not None, "no interest_change"
                if ours(item):
                    return item

        listed = [s for s in watch.subscriptions if ours(s)]
        self.assertEqual([(s["subject"], s["endpoint"], s["queue"]) for s in listed],
                         [(self.subject("quotes.*"), feed.endpoint, None)])
        initial = next_change()
        self.assertEqual((initial["type"], initial["is_add"], initial["subject"]),
                         ("interest_change", True, self.subject("quotes.*")))

        later = feed.subscribe(self.subject("quotes.eur"), queue="q")
        change = next_change()
        self.assertEqual((change["is_add"], change["subject"], change["queue"]),
                         (True, self.subject("quotes.eur"), "q"))
        later.unsubscribe()
        change = next_change()
        self.assertEqual((change["is_add"], change["subject"]), (False, self.subject("quotes.eur")))
        watch.close()
        feed.subscribe(self.subject("quotes.usd"))
        self.assertEqual(list(watch), [])

    def test_will_is_published_only_without_bye(self) -> None:
        watcher = self.client("w").subscribe(self.subject("gone.*"))
        crashed = Client(self.path, name=f"{self.prefix}-crash",
                         will={"subject": self.subject("gone.crash"), "body": {"pid": 1}})
        crashed.close()
        with Client(self.path, will={"subject": self.subject("gone.clean"), "body": 2}):
            pass  # a normal exit says bye
        got = drain(watcher, quiet=0.5)
        self.assertEqual([(e["subject"], e["body"]) for e in got],
                         [(self.subject("gone.crash"), {"pid": 1})])
        self.assertEqual(got[0]["from"], f"{self.prefix}-crash")

    def test_monitor_sees_publishes(self) -> None:
        watcher = self.client("mon", features=("topics", "rpc", "monitor"))
        mon = watcher.monitor(self.subject(">"), kinds=["publish"])
        pub = self.client("pub")
        pub.send(pub.endpoint, "not a publish")
        pub.publish(self.subject("x"), {"n": 1})
        seen = mon.next(2)
        assert seen is not None
        self.assertEqual(seen["type"], "monitored")
        self.assertEqual(seen["kind"], "publish")
        self.assertEqual(seen["subject"], self.subject("x"))
        self.assertEqual(seen["from"], pub.endpoint)
        self.assertEqual(seen["frame"]["body"], {"n": 1})
        self.assertIsNone(mon.next(0.3))

    def test_bad_subject_is_refused(self) -> None:
        c = self.client()
        with self.assertRaises(hookbus.BadSubject) as caught:
            c.subscribe(self.subject("a.>.b"))
        self.assertEqual(caught.exception.code, "bad_subject")


class RequestTest(LiveTest):
    def test_request_reply_with_serve(self) -> None:
        seen: List[Dict[str, Any]] = []

        def double(body: Any, frame: Dict[str, Any]) -> Any:
            seen.append(frame)
            return {"n": body["n"] * 2}

        responder = self.client("resp")
        responder.serve(self.subject("math.double"), double)
        requester = self.client("req")
        self.assertEqual(requester.request(self.subject("math.double"), {"n": 21}), {"n": 42})
        self.assertEqual(requester.request(self.subject("math.double"), {"n": 2}), {"n": 4})
        self.assertEqual(seen[0]["from"], requester.endpoint)
        self.assertEqual(seen[0]["subject"], self.subject("math.double"))
        self.assertTrue(str(seen[0]["reply_to"]).startswith("$"))

    def test_request_to_an_endpoint(self) -> None:
        responder = self.client("resp")
        responder.serve(None, lambda body, frame: ["direct", body])
        self.assertEqual(self.client("req").request(to=responder.endpoint, body=7), ["direct", 7])

    def test_no_responders_is_raised_at_once(self) -> None:
        requester = self.client("req")
        start = time.monotonic()
        with self.assertRaises(hookbus.NoResponders) as caught:
            requester.request(self.subject("nobody.home"), 1, timeout=5.0)
        self.assertLess(time.monotonic() - start, 1.0)
        self.assertEqual(caught.exception.code, "no_responders")
        self.assertIsNotNone(caught.exception.frame, "the bus said it, not a local timer")

    def test_timeout_when_the_responder_is_silent(self) -> None:
        silent = self.client("silent").subscribe(self.subject("slow"))  # gets it, never answers
        requester = self.client("req")
        start = time.monotonic()
        with self.assertRaises(hookbus.Timeout) as caught:
            requester.request(self.subject("slow"), 1, timeout=0.5)
        elapsed = time.monotonic() - start
        self.assertGreaterEqual(elapsed, 0.45)
        self.assertLess(elapsed, 1.4)
        self.assertEqual(caught.exception.code, "timeout")
        self.assertIsNotNone(caught.exception.frame, "the bus said it, not a local timer")
        self.assertIsInstance(caught.exception, TimeoutError)
        got = silent.next(1)
        assert got is not None
        self.assertEqual((got["type"], got["body"]), ("request", 1))

    def test_responder_gone(self) -> None:
        leaving = self.client("leaving")
        leaving.subscribe(self.subject("bye"), callback=lambda frame: leaving.close())
        with self.assertRaises(hookbus.ResponderGone) as caught:
            self.client("req").request(self.subject("bye"), 1, timeout=5.0)
        self.assertEqual(caught.exception.code, "responder_gone")

    def test_gather_collects_every_responder(self) -> None:
        def adder(i: int) -> Callable[[Any, Dict[str, Any]], Any]:
            return lambda body, frame: body + i
        for i in range(3):
            self.client(f"r{i}").serve(self.subject("census"), adder(i))
        requester = self.client("req")
        responses = requester.gather(self.subject("census"), 100, max=10, window=1.0)
        self.assertEqual(sorted(r["body"] for r in responses), [100, 101, 102])
        self.assertEqual(sorted(r["from"] for r in responses),
                         [f"{self.prefix}-r{i}" for i in range(3)])
        self.assertEqual(len(requester.gather(self.subject("census"), 0, max=2, window=1.0)), 2)

    def test_queue_group_of_responders_answers_once(self) -> None:
        calls: List[str] = []

        def member(name: str) -> Callable[[Any, Dict[str, Any]], str]:
            def handle(body: Any, frame: Dict[str, Any]) -> str:
                calls.append(name)
                return name
            return handle
        for name in ("a", "b"):
            self.client(name).serve(self.subject("work"), member(name), queue="pool")
        requester = self.client("req")
        answers = [requester.request(self.subject("work"), i) for i in range(4)]
        self.assertEqual(len(calls), 4)
        self.assertEqual(sorted(answers), sorted(calls))
        self.assertEqual(set(answers), {"a", "b"})


class HermesCompatTest(LiveTest):
    def test_bus_client_and_client_exchange_messages(self) -> None:
        hermes = BusClient(f"{self.prefix}-hermes", self.path)
        self.assertTrue(hermes.connect())
        self.addCleanup(hermes.disconnect)
        self.assertTrue(hermes.bus_session_id)
        modern = self.client("modern")
        assert modern.endpoint is not None

        modern.send(hermes.endpoint, {"text": "hi hermes"})
        got = wait_for(hermes.poll)
        self.assertEqual([(m["type"], m["from"], m["body"]) for m in got],
                         [("message", modern.endpoint, {"text": "hi hermes"})])

        self.assertTrue(hermes.send(modern.endpoint, {"text": "hi back"}))
        msg = modern.recv(2)
        assert msg is not None
        self.assertEqual((msg["from"], msg["body"]), (hermes.endpoint, {"text": "hi back"}))

        self.assertTrue(send_message(modern.endpoint, {"one": "shot"}, socket_path=self.path))
        msg = modern.recv(2)
        assert msg is not None
        self.assertEqual((msg["from"], msg["body"]), ("anonymous", {"one": "shot"}))
        self.assertFalse(send_message(f"{self.prefix}-nobody", {}, socket_path=self.path))

    def test_bus_client_answers_a_request_as_hermes_does(self) -> None:
        hermes = BusClient(f"{self.prefix}-hermes", self.path)
        self.assertTrue(hermes.connect())
        self.addCleanup(hermes.disconnect)
        stop = threading.Event()

        def serve() -> None:  # a hermes endpoint answers with a message to `reply_to`
            while not stop.is_set():
                for msg in hermes.poll():
                    if msg.get("reply_to"):
                        hermes.send(msg["reply_to"], {"echo": msg["body"]})
                time.sleep(0.01)
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        self.addCleanup(stop.set)
        self.assertEqual(self.client("req").request(to=hermes.endpoint, body=5), {"echo": 5})

    def test_bus_client_on_message_callback(self) -> None:
        got: List[Dict[str, Any]] = []
        hermes = BusClient(f"{self.prefix}-cb", self.path, on_message=got.append)
        self.assertTrue(hermes.connect())
        self.addCleanup(hermes.disconnect)
        self.client("sender").send(hermes.endpoint, 3)
        self.assertEqual([m["body"] for m in wait_for(lambda: got)], [3])
        self.assertEqual(hermes.poll(), [])


class AsyncTest(unittest.IsolatedAsyncioTestCase):
    socket_path: Optional[str] = None

    def setUp(self) -> None:
        self.path = self.socket_path or SOCKET
        self.prefix = "t" + uuid.uuid4().hex[:10]

    async def test_async_publish_subscribe(self) -> None:
        async with await connect(self.path, name=f"{self.prefix}-a") as a:
            async with await connect(self.path) as b:
                sub = await b.subscribe(f"{self.prefix}.*")
                await a.publish(f"{self.prefix}.one", 1)
                await a.publish(f"{self.prefix}.two.deep", 2)
                await a.publish(f"{self.prefix}.three", 3)
                got = []
                async for event in sub:
                    got.append((event["subject"], event["body"], event["from"]))
                    if len(got) == 2:
                        break
                self.assertEqual(got, [(f"{self.prefix}.one", 1, f"{self.prefix}-a"),
                                       (f"{self.prefix}.three", 3, f"{self.prefix}-a")])
                self.assertIsNone(await sub.next(0.3))
        self.assertTrue(a.closed and b.closed)

    async def test_async_request_reply(self) -> None:
        async with await connect(self.path) as server, await connect(self.path) as client:
            async def handler(body: Any, frame: Dict[str, Any]) -> Any:
                await asyncio.sleep(0.01)
                return body.upper()
            await server.serve(f"{self.prefix}.upper", handler)
            self.assertEqual(await client.request(f"{self.prefix}.upper", "abc"), "ABC")
            with self.assertRaises(hookbus.NoResponders):
                await client.request(f"{self.prefix}.none", "abc")
            gathered = await client.gather(f"{self.prefix}.upper", "x", window=0.5)
            self.assertEqual([r["body"] for r in gathered], ["X"])
