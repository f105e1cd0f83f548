"""Integration tests of the KV, jobs and streams against a live hookbus daemon with a
store.

Point HOOKBUS_SOCKET at its socket (the daemon keeps its store in its state
directory unless started with `--no-store`), and HOOKBUS_TEST_STREAM at a stream it
declares on the subjects `<root>.>` (the streams tests publish on `<root>.<unique>.x`
and read back only those):

    printf 'streams:\n  - name: py\n    subjects: ["py.>"]\n' > /tmp/hb/streams.yaml
    hookbus --socket /tmp/hb/bus.sock daemon start --sync normal --streams /tmp/hb/streams.yaml
    HOOKBUS_SOCKET=/tmp/hb/bus.sock HOOKBUS_TEST_STREAM=py \
        python3 -m unittest discover -s tests -v

Without HOOKBUS_SOCKET the whole module is skipped; without HOOKBUS_TEST_STREAM the
streams tests are. Every test uses keys, goals, subjects and durable consumers of
its own (and deletes its consumers), so a daemon others use is fine.
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
from hookbus import Client  # noqa: E402
from hookbus.aio import AsyncClient, AsyncReplay, connect  # noqa: E402

SOCKET = os.environ.get("HOOKBUS_SOCKET")
STREAM = os.environ.get("HOOKBUS_TEST_STREAM")
NO_STREAM = ("HOOKBUS_TEST_STREAM is not set: name a stream the daemon declares on "
             "`<root>.>` (e.g. `py` on `py.>`, with --streams FILE) to run the streams tests")


def setUpModule() -> None:
    if not SOCKET:
        raise unittest.SkipTest(
            "HOOKBUS_SOCKET is not set: start a hookbus daemon with a store and set "
            "HOOKBUS_SOCKET to its socket to run the live KV and jobs tests")


def changes(watch: hookbus.KvWatch, quiet: float = 0.3) -> List[Dict[str, Any]]:
    """Every frame that arrives until none has for `quiet` seconds."""
    frames: List[Dict[str, Any]] = []
    while True:
        frame = watch.next(quiet)
        if frame is None:
            return frames
        frames.append(frame)


def summary(frames: List[Dict[str, Any]]) -> List[Any]:
    """`kv_change` frames as (op, key, value), and `kv_synced` as the string."""
    return [(f["op"], f["key"], f.get("value")) if f["type"] == "kv_change" else f["type"]
            for f in frames]


class StoreTest(unittest.TestCase):
    """Base: a fresh prefix for keys and goals, and clients closed after each test."""

    def setUp(self) -> None:
        self.path = SOCKET
        self.prefix = "t" + uuid.uuid4().hex[:10]

    def client(self, **kwargs: Any) -> Client:
        c = Client(self.path, **kwargs)
        self.addCleanup(c.close)
        return c

    def key(self, rest: str) -> str:
        return f"{self.prefix}.{rest}"


class KvTest(StoreTest):
    def test_put_get_compare_and_set_delete_keys(self) -> None:
        c = self.client()
        self.assertIn("kv", c.features)
        first = c.kv_put(self.key("cfg.theme"), {"name": "dark"})
        self.assertIsInstance(first, int)
        got = c.kv_get(self.key("cfg.theme"))
        assert got is not None
        self.assertEqual((got["type"], got["key"], got["value"], got["revision"]),
                         ("kv_value", self.key("cfg.theme"), {"name": "dark"}, first))
        self.assertNotIn("expires_at_ms", got)
        self.assertIsNone(c.kv_get(self.key("cfg.nothing")))

        with self.assertRaises(hookbus.RevisionMismatch) as caught:  # create only: it exists
            c.kv_put(self.key("cfg.theme"), "light", if_revision=0)
        self.assertEqual(caught.exception.code, "revision_mismatch")
        self.assertEqual(caught.exception.revision, first)
        with self.assertRaises(hookbus.RevisionMismatch) as caught:
            c.kv_put(self.key("cfg.theme"), "light", if_revision=first + 1000)
        self.assertEqual(caught.exception.revision, first)
        second = c.kv_put(self.key("cfg.theme"), "light", if_revision=first)
        self.assertGreater(second, first)
        with self.assertRaises(hookbus.RevisionMismatch) as caught:  # absent: revision 0
            c.kv_put(self.key("cfg.font"), 12, if_revision=5)
        self.assertEqual(caught.exception.revision, 0)
        created = c.kv_put(self.key("cfg.font"), 12, if_revision=0)
        self.assertGreater(created, second)
        c.kv_put(self.key("other"), None)  # null is a value like any other
        null = c.kv_get(self.key("other"))
        assert null is not None
        self.assertIsNone(null["value"])

        self.assertEqual(c.kv_keys(self.key("cfg.")),
                         [self.key("cfg.font"), self.key("cfg.theme")])
        everything = c.kv_keys(self.prefix)
        self.assertEqual(everything, sorted(everything))
        self.assertEqual(len(everything), 3)
        self.assertFalse(everything.more)

        with self.assertRaises(hookbus.RevisionMismatch) as caught:
            c.kv_delete(self.key("cfg.theme"), if_revision=first)
        self.assertEqual(caught.exception.revision, second)
        deleted = c.kv_delete(self.key("cfg.theme"), if_revision=second)
        self.assertGreater(deleted, created)
        self.assertIsNone(c.kv_get(self.key("cfg.theme")))
        with self.assertRaises(hookbus.NotFound):
            c.kv_delete(self.key("cfg.theme"))
        self.assertEqual(c.kv_keys(self.key("cfg.")), [self.key("cfg.font")])

    def test_another_client_reads_the_write(self) -> None:
        writer, reader = self.client(), self.client()
        revision = writer.kv_put(self.key("shared"), [1, 2, 3])
        got = reader.kv_get(self.key("shared"))
        assert got is not None
        self.assertEqual((got["value"], got["revision"]), ([1, 2, 3], revision))

    def test_watch_sends_snapshot_then_synced_then_changes(self) -> None:
        writer = self.client()
        a = writer.kv_put(self.key("svc.a"), 1)
        writer.kv_put(self.key("svc.b"), {"up": True})
        writer.kv_put(self.key("elsewhere"), 0)
        watch = self.client().kv_watch(self.key("svc.*"))
        self.assertIsNotNone(watch.wid)
        self.assertEqual(summary(changes(watch)),
                         [("put", self.key("svc.a"), 1), ("put", self.key("svc.b"), {"up": True}),
                          "kv_synced"])

        c = writer.kv_put(self.key("svc.c"), "new")
        writer.kv_put(self.key("elsewhere"), 1)  # not matched
        writer.kv_put(self.key("svc.deep.x"), 1)  # `*` is one token
        d = writer.kv_delete(self.key("svc.a"))
        live = changes(watch)
        self.assertEqual(summary(live), [("put", self.key("svc.c"), "new"),
                                         ("delete", self.key("svc.a"), None)])
        self.assertEqual([f["revision"] for f in live], [c, d])
        self.assertGreater(c, a)
        self.assertTrue(all(f["wid"] == watch.wid for f in live))

        watch.close()
        writer.kv_put(self.key("svc.e"), 1)
        self.assertEqual(list(watch), [])
        with self.assertRaises(hookbus.Closed):
            watch.next(0.1)
        watch.close()  # a second close does nothing

    def test_watch_without_snapshot_and_as_context_manager(self) -> None:
        c = self.client()
        c.kv_put(self.key("x"), 1)
        with c.kv_watch(self.key(">"), snapshot=False) as watch:
            first = watch.next(2)
            assert first is not None
            self.assertEqual(first["type"], "kv_synced")
            c.kv_put(self.key("x"), 2)
            change = watch.next(2)
            assert change is not None
            self.assertEqual((change["op"], change["key"], change["value"]),
                             ("put", self.key("x"), 2))
        self.assertTrue(watch.ended)

    def test_ttl_expiry_is_seen_by_a_watcher(self) -> None:
        c = self.client()
        watch = c.kv_watch(self.key("session.*"))
        synced = watch.next(2)
        assert synced is not None
        self.assertEqual(synced["type"], "kv_synced")
        start_ms = time.time() * 1000
        c.kv_put(self.key("session.1"), "token", ttl=0.5)
        got = c.kv_get(self.key("session.1"))
        assert got is not None
        self.assertGreater(got["expires_at_ms"], start_ms)
        put = watch.next(2)
        assert put is not None
        self.assertEqual((put["op"], put["expires_at_ms"]), ("put", got["expires_at_ms"]))
        expired = watch.next(5)  # "within about a second" of the TTL
        assert expired is not None, "no expire change"
        self.assertEqual((expired["op"], expired["key"]), ("expire", self.key("session.1")))
        self.assertNotIn("value", expired)
        self.assertGreater(expired["revision"], put["revision"])
        self.assertIsNone(c.kv_get(self.key("session.1")))
        self.assertEqual(c.kv_keys(self.key("session.")), [])

    def test_bad_keys_and_arguments(self) -> None:
        c = self.client()
        with self.assertRaises(hookbus.BadKey) as caught:
            c.kv_put(self.key("a.*"), 1)
        self.assertEqual(caught.exception.code, "bad_key")
        with self.assertRaises(hookbus.BadKey):
            c.kv_watch(self.key("a.>.b"))
        with self.assertRaises(ValueError):
            c.kv_put(self.key("a"), 1, ttl=0)
        with self.assertRaises(ValueError):
            c.kv_put(self.key("a"), 1, if_revision=-1)
        self.assertEqual(c.kv_keys(self.prefix), [])

    def test_kv_needs_the_feature(self) -> None:
        c = self.client(features=("topics",))
        self.assertNotIn("kv", c.features)
        with self.assertRaises(hookbus.NotNegotiated):
            c.kv_get(self.key("a"))
        with self.assertRaises(hookbus.NotNegotiated):
            c.job_claim(self.key("a"))


class JobsTest(StoreTest):
    def test_publish_claim_fulfil(self) -> None:
        producer, worker = self.client(), self.client()
        self.assertIn("jobs", producer.features)
        job_id, duplicate = producer.job_publish(self.key("img.resize"), {"w": 64})
        self.assertIsInstance(job_id, str)
        self.assertFalse(duplicate)
        info = producer.job_status(job_id)
        self.assertEqual((info["type"], info["state"], info["goal"], info["payload"],
                          info["attempt"]),
                         ("job_info", "queued", self.key("img.resize"), {"w": 64}, 0))

        job = worker.job_claim(self.key("img.>"), lease=30)
        assert job is not None
        self.assertEqual((job["type"], job["job"], job["goal"], job["payload"], job["attempt"]),
                         ("job", job_id, self.key("img.resize"), {"w": 64}, 1))
        self.assertIsInstance(job["lease"], str)
        self.assertEqual(producer.job_status(job_id)["state"], "leased")
        until = worker.job_extend(job, duration=60)
        self.assertGreater(until, job["lease_until_ms"])
        worker.job_fulfill(job, result={"w": 32})
        info = producer.job_status(job_id)
        self.assertEqual((info["state"], info["result"]), ("done", {"w": 32}))
        self.assertIn("finished_ms", info)

        self.assertIsNone(worker.job_claim(self.key("img.>")))
        start = time.monotonic()
        self.assertIsNone(worker.job_claim(self.key("img.>"), wait=0.4))
        self.assertGreaterEqual(time.monotonic() - start, 0.35)
        with self.assertRaises(hookbus.NotFound):
            producer.job_status(str(uuid.uuid4()))

    def test_claim_waits_for_a_publish(self) -> None:
        producer = self.client()
        worker = self.client(timeout=1.0)  # the wait is added to the call's own timeout
        got: List[Optional[Dict[str, Any]]] = []
        thread = threading.Thread(
            target=lambda: got.append(worker.job_claim(self.key("later"), wait=4.0)))
        thread.start()
        time.sleep(1.5)
        job_id, _ = producer.job_publish(self.key("later"), "payload")
        thread.join(5)
        self.assertEqual(len(got), 1)
        job = got[0]
        assert job is not None
        self.assertEqual((job["job"], job["payload"]), (job_id, "payload"))
        worker.job_fulfill(job["job"], job["lease"])  # an id and a lease token work too

    def test_priority_then_age_and_job_list(self) -> None:
        c = self.client()
        low, _ = c.job_publish(self.key("q.a"), 1)
        high, _ = c.job_publish(self.key("q.b"), 2, priority=5)
        later, _ = c.job_publish(self.key("q.c"), 3, delay=30)
        listed = c.job_list(goal=self.key("q.>"))
        self.assertEqual([j["job"] for j in listed], [low, high, later])
        self.assertEqual([j["job"] for j in c.job_list(goal=self.key("q.>"), limit=2)],
                         [low, high])
        self.assertIn("ready_at_ms", listed[2])
        first = c.job_claim(self.key("q.>"), lease=10)
        second = c.job_claim(self.key("q.>"), lease=10)
        assert first is not None and second is not None
        self.assertEqual((first["job"], second["job"]), (high, low))
        self.assertIsNone(c.job_claim(self.key("q.>")), "the delayed job is not ready")
        self.assertEqual([j["job"] for j in c.job_list(state="leased", goal=self.key("q.>"))],
                         [low, high])
        c.job_cancel(later)
        self.assertEqual(c.job_status(later)["state"], "cancelled")

    def test_idempotent_publish_duplicate_and_conflict(self) -> None:
        c = self.client()
        key = f"{self.prefix}-order-17"
        job_id, duplicate = c.job_publish(self.key("ship"), {"order": 17}, idempotency_key=key)
        self.assertFalse(duplicate)
        again, duplicate = c.job_publish(self.key("ship"), {"order": 17}, idempotency_key=key)
        self.assertEqual((again, duplicate), (job_id, True))
        with self.assertRaises(hookbus.IdempotencyConflict) as caught:
            c.job_publish(self.key("ship"), {"order": 18}, idempotency_key=key)
        self.assertEqual(caught.exception.code, "idempotency_conflict")
        self.assertEqual(len(c.job_list(goal=self.key("ship"))), 1)

    def test_stale_lease_is_lost(self) -> None:
        producer, slow, fast = self.client(), self.client(), self.client()
        job_id, _ = producer.job_publish(self.key("work"), "x", backoff=0.01)
        first = slow.job_claim(self.key("work"), lease=0.3)
        assert first is not None
        self.assertEqual(first["attempt"], 1)
        time.sleep(0.5)  # the lease ends: the job is queued again
        second = fast.job_claim(self.key("work"), lease=30, wait=5)
        assert second is not None, "the expired job was not queued again"
        self.assertEqual((second["job"], second["attempt"]), (job_id, 2))
        self.assertNotEqual(second["lease"], first["lease"])
        with self.assertRaises(hookbus.LeaseLost) as caught:
            slow.job_fulfill(first, result="late")
        self.assertEqual(caught.exception.code, "lease_lost")
        with self.assertRaises(hookbus.LeaseLost):
            slow.job_extend(first)
        with self.assertRaises(hookbus.LeaseLost):
            slow.job_fail(first, error="late")
        fast.job_fulfill(second, result="on time")
        info = producer.job_status(job_id)
        self.assertEqual((info["state"], info["result"], info["attempt"]), ("done", "on time", 2))

    def test_failures_end_dead_and_retry_revives(self) -> None:
        c = self.client()
        goal = self.key("flaky")
        dead_events = c.subscribe(f"$jobs.{goal}.dead")
        job_id, _ = c.job_publish(goal, {"n": 1}, max_attempts=2, backoff=0.01)

        job = c.job_claim(goal)
        assert job is not None
        failed = c.job_fail(job, error="boom")
        self.assertEqual((failed["type"], failed["job"], failed["state"]),
                         ("job_failed", job_id, "queued"))
        self.assertIsInstance(failed["ready_at_ms"], int)
        job = c.job_claim(goal, wait=3)
        assert job is not None
        self.assertEqual(job["attempt"], 2)
        failed = c.job_fail(job, error="boom again")
        self.assertEqual(failed["state"], "dead")
        info = c.job_status(job_id)
        self.assertEqual((info["state"], info["attempt"], info["error"]),
                         ("dead", 2, "boom again"))
        self.assertIsNone(c.job_claim(goal, wait=0.2))
        event = dead_events.next(2)
        assert event is not None
        self.assertEqual(event["body"], {"job": job_id, "goal": goal, "attempt": 2,
                                         "error": "boom again"})
        self.assertIn(job_id, [j["job"] for j in c.job_list(state="dead", goal=goal)])

        c.job_retry(job_id)
        self.assertEqual(c.job_status(job_id)["state"], "queued")
        job = c.job_claim(goal)
        assert job is not None
        self.assertEqual(job["attempt"], 1)
        self.assertEqual(c.job_fail(job, error="give up", retry=False)["state"], "dead")
        c.job_cancel(job_id)
        self.assertEqual(c.job_status(job_id)["state"], "cancelled")
        with self.assertRaises(hookbus.BadRequest):
            c.job_cancel(job_id)  # cancelled already
        c.job_retry(job_id)
        job = c.job_claim(goal)
        assert job is not None
        c.job_fulfill(job)
        self.assertEqual(c.job_status(job_id)["state"], "done")

    def test_a_closed_connection_gives_its_leases_back(self) -> None:
        producer = self.client()
        job_id, _ = producer.job_publish(self.key("held"), 1, backoff=0.01)
        holder = Client(self.path)
        job = holder.job_claim(self.key("held"), lease=60)
        assert job is not None
        holder.close()
        again = producer.job_claim(self.key("held"), wait=3)
        assert again is not None, "the lease of a closed connection was not given back"
        self.assertEqual((again["job"], again["attempt"]), (job_id, 2))
        producer.job_fulfill(again)

    def test_bad_arguments(self) -> None:
        c = self.client()
        with self.assertRaises(hookbus.BadSubject):
            c.job_publish(self.key("a.*"))
        with self.assertRaises(ValueError):
            c.job_claim(self.key("a"), lease=0)
        with self.assertRaises(ValueError):
            c.job_claim(self.key("a"), wait=301)
        with self.assertRaises(TypeError):
            c.job_fulfill("some-id")  # no lease
        with self.assertRaises(hookbus.BadRequest):
            c.job_publish(self.key("a"), max_attempts=0)


class AsyncStoreTest(unittest.IsolatedAsyncioTestCase):
    def setUp(self) -> None:
        self.path = SOCKET
        self.prefix = "t" + uuid.uuid4().hex[:10]

    async def test_async_kv_put_get_watch(self) -> None:
        async with await connect(self.path) as a, await connect(self.path) as b:
            key = f"{self.prefix}.cfg"
            first = await a.kv_put(key, {"v": 1})
            got = await b.kv_get(key)
            assert got is not None
            self.assertEqual((got["value"], got["revision"]), ({"v": 1}, first))
            self.assertIsNone(await b.kv_get(f"{self.prefix}.none"))
            with self.assertRaises(hookbus.RevisionMismatch) as caught:
                await b.kv_put(key, {"v": 2}, if_revision=0)
            self.assertEqual(caught.exception.revision, first)
            self.assertEqual(await a.kv_keys(self.prefix), [key])

            watch = await b.kv_watch(f"{self.prefix}.>")
            seen = []
            async for frame in watch:
                seen.append(frame)
                if frame["type"] == "kv_synced":
                    break
            self.assertEqual([(f["type"], f.get("value")) for f in seen],
                             [("kv_change", {"v": 1}), ("kv_synced", None)])
            second = await a.kv_put(key, {"v": 2}, if_revision=first)
            gone = await a.kv_delete(key)
            put, deleted = await watch.next(2), await watch.next(2)
            assert put is not None and deleted is not None
            self.assertEqual((put["op"], put["value"], put["revision"]), ("put", {"v": 2}, second))
            self.assertEqual((deleted["op"], deleted["revision"]), ("delete", gone))
            await watch.close()
            self.assertEqual([f async for f in watch], [])
            with self.assertRaises(hookbus.NotFound):
                await a.kv_delete(key)

    async def test_async_job_cycle(self) -> None:
        async with await connect(self.path) as producer, await connect(self.path) as worker:
            goal = f"{self.prefix}.mail.send"
            job_id, duplicate = await producer.job_publish(goal, {"to": "ed"}, backoff=0.01)
            self.assertFalse(duplicate)
            job = await worker.job_claim(f"{self.prefix}.mail.*", lease=0.3, wait=1)
            assert job is not None
            self.assertEqual((job["job"], job["payload"], job["attempt"]),
                             (job_id, {"to": "ed"}, 1))
            self.assertGreater(await worker.job_extend(job, duration=30), job["lease_until_ms"])
            failed = await worker.job_fail(job, error="smtp down")
            self.assertEqual(failed["state"], "queued")
            job = await worker.job_claim(goal, wait=3)
            assert job is not None
            self.assertEqual(job["attempt"], 2)
            await worker.job_fulfill(job, result="sent")
            with self.assertRaises(hookbus.LeaseLost):
                await worker.job_fulfill(job)
            info = await producer.job_status(job_id)
            self.assertEqual((info["state"], info["result"]), ("done", "sent"))
            self.assertEqual([j["job"] for j in await producer.job_list(goal=goal)], [job_id])
            self.assertIsNone(await worker.job_claim(goal, wait=0.2))
            other, _ = await producer.job_publish(goal)
            await producer.job_cancel(other)
            await producer.job_retry(other)
            self.assertEqual((await producer.job_status(other))["state"], "queued")
            await producer.job_cancel(other)


# ── streams ─────────────────────────────────────────────────────────────────

def subject_root(info: Dict[str, Any]) -> str:
    """`<root>.` of the test stream's first `<root>.>` subject pattern."""
    for pattern in info.get("subjects") or []:
        if isinstance(pattern, str) and pattern.endswith(".>"):
            return pattern[:-1]
    raise AssertionError(f"stream {STREAM!r} has no `<root>.>` subject pattern: {info!r}")


def bodies(frames: List[Dict[str, Any]]) -> List[Any]:
    return [f["body"] for f in frames]


def replayed(replay: hookbus.Replay, wait: float = 5.0) -> List[Dict[str, Any]]:
    """Every frame of a replay, failing (rather than hanging) if it does not end."""
    frames: List[Dict[str, Any]] = []
    while True:
        try:
            frame = replay.next(wait)
        except hookbus.Closed:
            assert replay.end is not None, "the replay ended without `replay_end`"
            return frames
        assert frame is not None, f"no `replay_end` within {wait:g} s"
        frames.append(frame)


def wait_for(condition: Callable[[], bool], what: str, wait: float = 5.0) -> None:
    """Polls `condition()` until it is true; fails after `wait` seconds."""
    deadline = time.monotonic() + wait
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {wait:g} s"
        time.sleep(0.01)


class StreamsTest(StoreTest):
    """Replays and durable consumers of the stream HOOKBUS_TEST_STREAM."""

    def setUp(self) -> None:
        if not STREAM:
            self.skipTest(NO_STREAM)
        super().setUp()
        self.stream = STREAM
        self.durables: List[str] = []
        self.addCleanup(self.delete_durables)  # runs after the clients are closed
        self.root = subject_root(self.client().stream_info(self.stream))
        self.subject = f"{self.root}{self.prefix}.x"

    def durable(self, name: str) -> str:
        """A durable consumer name of this test's own, deleted after it."""
        durable = f"{self.prefix}-{name}"
        self.durables.append(durable)
        return durable

    def delete_durables(self) -> None:
        with Client(self.path) as c:
            for durable in self.durables:
                for _ in range(50):  # a closed connection's consumers are released soon
                    try:
                        c.consumer_delete(self.stream, durable)
                    except hookbus.NotFound:
                        pass
                    except hookbus.ConsumerBusy:
                        time.sleep(0.05)
                        continue
                    break

    def publish_kept(self, c: Client, subject: str, items: List[Any]) -> None:
        """Publishes `items` on `subject`, then waits until the stream has kept them."""
        before = int(c.stream_info(self.stream)["last_seq"])
        for item in items:
            c.publish(subject, item)
        deadline = time.monotonic() + 5
        while int(c.stream_info(self.stream)["last_seq"]) < before + len(items):
            if time.monotonic() > deadline:
                self.fail(f"stream {self.stream!r} did not keep {len(items)} publishes in 5 s")
            time.sleep(0.02)

    def test_stream_info_and_list(self) -> None:
        c = self.client()
        self.assertIn("streams", c.features)
        info = c.stream_info(self.stream)
        self.assertEqual((info["type"], info["name"]), ("stream_info", self.stream))
        self.assertIsInstance(info["consumers"], list)
        self.publish_kept(c, self.subject, ["a"])
        after = c.stream_info(self.stream)
        self.assertGreater(after["last_seq"], info["last_seq"])
        self.assertGreaterEqual(after["messages"], 1)
        listed = {s["name"]: s for s in c.stream_list()}
        self.assertIn(self.stream, listed)
        self.assertEqual(listed[self.stream]["subjects"], info["subjects"])
        self.assertNotIn("consumers", listed[self.stream])
        unknown = f"no-such-{self.prefix}"
        with self.assertRaises(hookbus.NotFound):
            c.stream_info(unknown)
        with self.assertRaises(hookbus.NotFound):
            c.replay(unknown)
        with self.assertRaises(hookbus.NotFound):
            c.consume(unknown, self.durable("x"))

    def test_replay_from_first_with_a_subject_filter(self) -> None:
        c = self.client()
        other = f"{self.root}{self.prefix}.y"
        sent = [{"n": 1}, "two", [3], None]
        before = int(c.stream_info(self.stream)["last_seq"])
        self.publish_kept(c, self.subject, sent[:2])
        self.publish_kept(c, other, ["not this one"])  # kept, but filtered out
        self.publish_kept(c, self.subject, sent[2:])

        replay = c.replay(self.stream, "first", subject=self.subject)
        self.assertIsNotNone(replay.replay)
        self.assertEqual(replay.info["type"], "replaying")
        assert replay.last_seq is not None
        self.assertGreaterEqual(replay.last_seq, before + 5)
        events = replayed(replay)
        self.assertEqual(bodies(events), sent)
        self.assertEqual({(e["type"], e["stream"], e["subject"]) for e in events},
                         {("stream_event", self.stream, self.subject)})
        seqs = [e["seq"] for e in events]
        self.assertEqual(seqs, sorted(seqs))
        self.assertGreater(seqs[0], before)
        self.assertGreater(seqs[2], seqs[1] + 1, "the other subject's message is between")
        self.assertEqual(len({e["id"] for e in events}), 4)
        self.assertTrue(all("deliveries" not in e for e in events))
        assert replay.end is not None
        self.assertEqual((replay.end["type"], replay.end["last_seq"]),
                         ("replay_end", replay.last_seq))
        self.assertTrue(replay.ended)
        with self.assertRaises(hookbus.Closed):
            replay.next(0.1)

        # Other starts.
        self.assertEqual(bodies(replayed(c.replay(self.stream, {"seq": seqs[2]},
                                                  subject=self.subject))), sent[2:])
        self.assertEqual(bodies(replayed(c.replay(self.stream, seqs[1], subject=self.subject))),
                         sent[1:])
        self.assertEqual(bodies(replayed(c.replay(self.stream, {"id": events[3]["id"]},
                                                  subject=self.subject))), sent[3:])
        self.assertEqual(replayed(c.replay(self.stream, {"time_ms": events[3]["ts_ms"] + 1},
                                           subject=self.subject)), [])
        new = c.replay(self.stream, "new", subject=self.subject)
        self.assertEqual(replayed(new), [])
        assert new.end is not None
        self.assertEqual(new.end["last_seq"], new.last_seq)
        everything = c.replay(self.stream, {"seq": seqs[0]}, subject=f"{self.root}>")
        wait_for(lambda: everything.end is not None, "no `replay_end`")
        self.assertIn("not this one", bodies(list(everything)))  # iterating stops at the end

        with self.assertRaises(hookbus.SeqGone) as caught:  # the first kept is 1 or more
            c.replay(self.stream, {"seq": 0})
        self.assertEqual(caught.exception.code, "seq_gone")
        with self.assertRaises(hookbus.SeqGone):
            c.replay(self.stream, {"id": str(uuid.uuid4())})
        with self.assertRaises(ValueError):
            c.replay(self.stream, "middle")
        with self.assertRaises(hookbus.BadSubject):
            c.replay(self.stream, subject=f"{self.root}>.x")

    def test_consumer_gets_messages_and_ack_nak_term(self) -> None:
        c = self.client()
        self.publish_kept(c, self.subject, ["a", "b", "c"])
        durable = self.durable("work")
        consumer = c.consume(self.stream, durable, subject=self.subject, ack_wait=30,
                             max_deliver=5)
        self.assertEqual((consumer.info["type"], consumer.info["created"],
                          consumer.info["durable"], consumer.info["ack_wait_ms"],
                          consumer.info["consuming"]),
                         ("consuming", True, durable, 30000, True))
        first = [consumer.next(5) for _ in range(3)]
        self.assertNotIn(None, first)
        a, b, d = [f for f in first if f is not None]
        self.assertEqual(bodies([a, b, d]), ["a", "b", "c"])
        self.assertEqual([f["deliveries"] for f in (a, b, d)], [1, 1, 1])
        self.assertEqual({(f["type"], f["stream"], f["durable"], f["subject"]) for f in (a, b, d)},
                         {("stream_event", self.stream, durable, self.subject)})
        self.assertTrue(a["seq"] < b["seq"] < d["seq"])
        pending = {i["durable"]: i for i in c.stream_info(self.stream)["consumers"]}[durable]
        self.assertEqual((pending["pending"], pending["consuming"]), (3, True))

        consumer.nak(a, delay=0.5)                # again, half a second later
        consumer.progress(b["seq"])               # a seq works as well as the frame
        consumer.ack(b)
        consumer.term(d)
        self.assertIsNone(consumer.next(0.2), "a nak with a delay came back at once")
        again = consumer.next(5)
        assert again is not None, "the nak'ed message was not delivered again"
        self.assertEqual((again["seq"], again["body"], again["deliveries"]), (a["seq"], "a", 2))
        consumer.nak(again)                       # no delay: at once
        third = consumer.next(5)
        assert third is not None
        self.assertEqual((third["seq"], third["deliveries"]), (a["seq"], 3))
        consumer.ack(third)
        self.assertIsNone(consumer.next(0.3), "an acked or termed message came back")
        for done in (b, d, third):
            with self.assertRaises(hookbus.NotFound):
                consumer.ack(done)

        self.publish_kept(c, self.subject, ["live"])  # published while consuming
        live = consumer.next(5)
        assert live is not None
        self.assertEqual((live["body"], live["deliveries"]), ("live", 1))
        c.stream_ack(self.stream, durable, live)  # the client-level call, "ack" by default
        info = {i["durable"]: i for i in c.stream_info(self.stream)["consumers"]}[durable]
        self.assertEqual(info["pending"], 0)
        self.assertGreater(info["next_seq"], live["seq"])
        consumer.close()
        self.assertEqual(list(consumer), [])
        consumer.close()  # a second close does nothing
        with self.assertRaises(ValueError):
            c.stream_ack(self.stream, durable, 1, op="maybe")
        with self.assertRaises(ValueError):
            c.stream_ack(self.stream, durable, 1, op="ack", delay=1)

    def test_unacked_messages_go_to_the_next_consumer(self) -> None:
        producer = self.client()
        self.publish_kept(producer, self.subject, [1, 2, 3])
        durable = self.durable("handover")

        first = self.client()
        with first.consume(self.stream, durable, subject=self.subject) as consumer:
            got = [consumer.next(5) for _ in range(3)]
            self.assertEqual(bodies([g for g in got if g is not None]), [1, 2, 3])
            assert got[0] is not None
            consumer.ack(got[0])
        self.assertTrue(consumer.ended)

        second = self.client()  # closes its connection without unconsume, below
        resumed = second.consume(self.stream, durable, subject=self.subject)
        self.assertFalse(resumed.info["created"])
        again = [resumed.next(5) for _ in range(2)]
        self.assertEqual([(g["body"], g["deliveries"]) for g in again if g is not None],
                         [(2, 2), (3, 2)])
        self.assertIsNone(resumed.next(0.3), "an acked message was delivered again")
        assert again[0] is not None
        resumed.ack(again[0])
        second.close()

        third = self.client()
        deadline = time.monotonic() + 5
        while True:  # the bus releases a closed connection's consumers soon after
            try:
                last = third.consume(self.stream, durable, subject=self.subject)
                break
            except hookbus.ConsumerBusy:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        frame = last.next(5)
        assert frame is not None
        self.assertEqual((frame["body"], frame["deliveries"]), (3, 3))
        last.ack(frame)
        self.publish_kept(producer, self.subject, [4])
        new = last.next(5)
        assert new is not None
        self.assertEqual((new["body"], new["deliveries"]), (4, 1))
        last.ack(new)
        last.close()
        with self.assertRaises(hookbus.BadRequest):  # the subject is fixed at creation
            third.consume(self.stream, durable, subject=f"{self.root}>")

    def test_a_consumer_is_busy_for_a_second_client(self) -> None:
        a, b = self.client(), self.client()
        durable = self.durable("busy")
        consumer = a.consume(self.stream, durable, subject=self.subject)
        with self.assertRaises(hookbus.ConsumerBusy) as caught:
            b.consume(self.stream, durable, subject=self.subject)
        self.assertEqual(caught.exception.code, "consumer_busy")
        with self.assertRaises(hookbus.ConsumerBusy):
            b.consumer_delete(self.stream, durable)
        consumer.close()
        taken = b.consume(self.stream, durable, subject=self.subject)
        self.assertFalse(taken.info["created"])
        with self.assertRaises(hookbus.ConsumerBusy):
            a.consume(self.stream, durable, subject=self.subject)
        # Consuming again on the same connection replaces the Consumer object.
        again = b.consume(self.stream, durable, subject=self.subject, max_deliver=2)
        self.assertEqual(again.info["max_deliver"], 2)
        self.assertTrue(taken.ended)
        self.publish_kept(a, self.subject, ["x"])
        frame = again.next(5)
        assert frame is not None
        self.assertEqual(frame["body"], "x")
        again.ack(frame)
        self.assertEqual(list(taken), [])

    def test_consumer_delete(self) -> None:
        c = self.client()
        self.publish_kept(c, self.subject, ["old"])
        durable = self.durable("gone")
        consumer = c.consume(self.stream, durable, subject=self.subject)
        frame = consumer.next(5)
        assert frame is not None
        self.assertEqual(frame["body"], "old")
        c.consumer_delete(self.stream, durable)  # by the connection consuming it
        self.assertTrue(consumer.ended)
        self.assertEqual(list(consumer), [])
        self.assertNotIn(durable, [i["durable"] for i in c.stream_info(self.stream)["consumers"]])
        with self.assertRaises(hookbus.NotFound):
            c.consumer_delete(self.stream, durable)
        with self.assertRaises(hookbus.NotFound):
            c.stream_ack(self.stream, durable, frame)

        fresh = c.consume(self.stream, durable, subject=self.subject, from_="new")
        self.assertTrue(fresh.info["created"])  # a new consumer: it forgot "old"
        self.assertIsNone(fresh.next(0.3))
        self.publish_kept(c, self.subject, ["new"])
        got = fresh.next(5)
        assert got is not None
        self.assertEqual((got["body"], got["deliveries"]), ("new", 1))
        fresh.close()
        c.consumer_delete(self.stream, durable)  # not consumed by anyone
        with self.assertRaises(hookbus.BadRequest):
            c.consume(self.stream, "not a name!")

    def test_streams_need_the_feature(self) -> None:
        c = self.client(features=("topics",))
        self.assertNotIn("streams", c.features)
        with self.assertRaises(hookbus.NotNegotiated):
            c.replay(self.stream)
        with self.assertRaises(hookbus.NotNegotiated):
            c.consume(self.stream, self.durable("x"))
        with self.assertRaises(hookbus.NotNegotiated):
            c.stream_list()


async def areplayed(replay: AsyncReplay, wait: float = 5.0) -> List[Dict[str, Any]]:
    """Every frame of an async replay, failing (rather than hanging) if it does not end."""
    frames: List[Dict[str, Any]] = []
    while True:
        try:
            frame = await replay.next(wait)
        except hookbus.Closed:
            assert replay.end is not None, "the replay ended without `replay_end`"
            return frames
        assert frame is not None, f"no `replay_end` within {wait:g} s"
        frames.append(frame)


class AsyncStreamsTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        if not STREAM:
            self.skipTest(NO_STREAM)
        self.path = SOCKET
        self.stream = STREAM
        self.prefix = "t" + uuid.uuid4().hex[:10]
        self.durables: List[str] = []

    async def asyncTearDown(self) -> None:
        async with await connect(self.path) as c:
            for durable in self.durables:
                for _ in range(50):
                    try:
                        await c.consumer_delete(self.stream, durable)
                    except hookbus.NotFound:
                        pass
                    except hookbus.ConsumerBusy:
                        await asyncio.sleep(0.05)
                        continue
                    break

    async def publish_kept(self, c: AsyncClient, subject: str, items: List[Any]) -> None:
        before = int((await c.stream_info(self.stream))["last_seq"])
        for item in items:
            await c.publish(subject, item)
        deadline = time.monotonic() + 5
        while int((await c.stream_info(self.stream))["last_seq"]) < before + len(items):
            if time.monotonic() > deadline:
                self.fail(f"stream {self.stream!r} did not keep {len(items)} publishes in 5 s")
            await asyncio.sleep(0.02)

    async def test_async_replay(self) -> None:
        async with await connect(self.path) as c:
            self.assertIn("streams", c.features)
            root = subject_root(await c.stream_info(self.stream))
            subject = f"{root}{self.prefix}.x"
            await self.publish_kept(c, subject, ["a", {"b": 2}])
            await self.publish_kept(c, f"{root}{self.prefix}.y", ["other"])
            await self.publish_kept(c, subject, ["c"])
            self.assertIn(self.stream, [s["name"] for s in await c.stream_list()])

            replay = await c.replay(self.stream, "first", subject=subject)
            events = await areplayed(replay)
            self.assertEqual(bodies(events), ["a", {"b": 2}, "c"])
            self.assertEqual([e["seq"] for e in events], sorted(e["seq"] for e in events))
            assert replay.end is not None
            self.assertEqual(replay.end["type"], "replay_end")
            self.assertEqual(replay.last_seq, replay.end["last_seq"])
            with self.assertRaises(hookbus.Closed):
                await replay.next(0.1)
            later = await c.replay(self.stream, {"seq": events[1]["seq"]}, subject=subject)
            for _ in range(500):
                if later.end is not None:
                    break
                await asyncio.sleep(0.01)
            assert later.end is not None, "no `replay_end` within 5 s"
            self.assertEqual(bodies([e async for e in later]), [{"b": 2}, "c"])
            self.assertEqual(await areplayed(await c.replay(self.stream, "new")), [])
            with self.assertRaises(hookbus.SeqGone):
                await c.replay(self.stream, {"seq": 0})
            with self.assertRaises(hookbus.NotFound):
                await c.stream_info(f"no-such-{self.prefix}")

    async def test_async_consumer(self) -> None:
        async with await connect(self.path) as a, await connect(self.path) as b:
            root = subject_root(await a.stream_info(self.stream))
            subject = f"{root}{self.prefix}.x"
            durable = f"{self.prefix}-async"
            self.durables.append(durable)
            await self.publish_kept(a, subject, [1, 2, 3])

            consumer = await a.consume(self.stream, durable, subject=subject, ack_wait=30)
            self.assertEqual((consumer.info["created"], consumer.info["ack_wait_ms"]),
                             (True, 30000))
            got = []
            for _ in range(3):
                frame = await consumer.next(5)
                assert frame is not None, "a message of the stream was not delivered"
                got.append(frame)
            self.assertEqual([(f["body"], f["deliveries"]) for f in got], [(1, 1), (2, 1), (3, 1)])
            with self.assertRaises(hookbus.ConsumerBusy):
                await b.consume(self.stream, durable, subject=subject)
            with self.assertRaises(hookbus.ConsumerBusy):
                await b.consumer_delete(self.stream, durable)

            await consumer.nak(got[0])
            again = await consumer.next(5)
            assert again is not None
            self.assertEqual((again["seq"], again["deliveries"]), (got[0]["seq"], 2))
            await consumer.progress(again)
            await consumer.ack(again)
            await consumer.term(got[2]["seq"])
            with self.assertRaises(hookbus.NotFound):
                await consumer.ack(again)
            self.assertIsNone(await consumer.next(0.3))
            await consumer.close()  # got[1] was not acknowledged
            self.assertEqual([f async for f in consumer], [])

            async with await b.consume(self.stream, durable, subject=subject) as taken:
                self.assertFalse(taken.info["created"])
                frame = await taken.next(5)
                assert frame is not None
                self.assertEqual((frame["seq"], frame["body"], frame["deliveries"]),
                                 (got[1]["seq"], 2, 2))
                acked = await b.stream_ack(self.stream, durable, frame)
                self.assertEqual((acked["type"], acked["op"]), ("stream_acked", "ack"))
                self.assertIsNone(await taken.next(0.3))
            self.assertTrue(taken.ended)
            info = await a.stream_info(self.stream)
            mine = [i for i in info["consumers"] if i["durable"] == durable]
            self.assertEqual([(i["pending"], i["consuming"]) for i in mine], [(0, False)])

            await a.consumer_delete(self.stream, durable)
            with self.assertRaises(hookbus.NotFound):
                await a.consumer_delete(self.stream, durable)
