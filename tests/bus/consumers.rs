//! Durable consumers of streams: acks, naks, terms, ack waits, max_deliver,
//! max_ack_pending, one connection per consumer, pacing, and a cursor that
//! survives its client and a daemon killed with SIGKILL.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use hookbus::client::Bus;
use serde_json::{json, Value};

use crate::common::{bus_when_up, Raw, TestBus, WAIT};
use crate::streams::{serve, store_bus, wait_for_stream};
use crate::topics::{speaker, subscribe};

async fn bus(state: &Path, streams: &[(&str, &str)]) -> TestBus {
    bus_with_outbox(state, streams, 256).await
}

/// `outbox` frames per client (high water is half of it).
async fn bus_with_outbox(state: &Path, streams: &[(&str, &str)], outbox: usize) -> TestBus {
    let configs = streams
        .iter()
        .map(|(name, subject)| crate::streams::stream(name, &[subject]))
        .collect();
    store_bus(state, configs, |c| c.outbox_capacity = outbox).await
}

/// Publishes `n` messages on `subject` and waits until `stream` holds
/// `last_seq`.
async fn publish(c: &Bus, subject: &str, n: u64, stream: &str, last_seq: u64) {
    for i in 0..n {
        c.publish(subject, json!({"n": i}), false).await.unwrap();
    }
    wait_for_stream(c, stream, last_seq).await;
}

/// Sends `consume` and returns its answer (`consuming` or an error).
async fn consume(c: &mut Raw, request: Value) -> Value {
    let mut request = request;
    request["type"] = "consume".into();
    request["rid"] = "consume".into();
    c.send(&request).await;
    loop {
        let f = c.recv().await;
        if f["rid"] == "consume" {
            return f;
        }
    }
}

async fn ack(c: &mut Raw, durable: &str, seq: u64, op: &str) {
    c.send(
        &json!({"type": "stream_ack", "stream": "work", "durable": durable, "seq": seq, "op": op}),
    )
    .await;
}

/// Reads frames until `done` says enough, or fails after the wait limit.
async fn read_until(c: &mut Raw, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while !done(&seen) {
        assert!(Instant::now() < deadline, "only got {seen:?}");
        seen.push(c.recv().await);
    }
    seen
}

fn events(frames: &[Value]) -> Vec<(u64, u64)> {
    frames
        .iter()
        .filter(|f| f["type"] == "stream_event")
        .map(|f| {
            (
                f["seq"].as_u64().unwrap(),
                f["deliveries"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_consumer_gets_each_message_until_acked_and_nak_term_ack_wait_and_max_deliver_hold() {
    let state = tempfile::tempdir().unwrap();
    let bus = bus(state.path(), &[("work", "w.>")]).await;
    let publisher = Bus::connect(&bus.socket, None, &["topics", "streams"])
        .await
        .unwrap();
    publish(&publisher, "w.a", 5, "work", 5).await;

    let mut c = speaker(&bus, &["topics", "streams"]).await;
    subscribe(&mut c, "$streams.work.>", json!({})).await;
    let answer = consume(
        &mut c,
        json!({"stream": "work", "durable": "d", "ack_wait_ms": 300, "max_deliver": 2}),
    )
    .await;
    assert_eq!(answer["type"], "consuming", "{answer}");
    assert_eq!(answer["created"], true);
    assert_eq!(answer["next_seq"], 1);
    let first = read_until(&mut c, |f| events(f).len() == 5).await;
    assert_eq!(
        events(&first),
        (1..=5).map(|s| (s, 1)).collect::<Vec<_>>(),
        "in order, delivered once"
    );
    assert_eq!(first[0]["durable"], "d");
    assert_eq!(first[0]["subject"], "w.a");
    assert_eq!(first[0]["body"], json!({"n": 0}));

    ack(&mut c, "d", 1, "ack").await;
    ack(&mut c, "d", 2, "term").await;
    ack(&mut c, "d", 3, "nak").await;
    ack(&mut c, "d", 5, "ack").await;
    // 3 comes back at once (nak), 4 after its ack wait; both once more after
    // theirs, and then they are given up (max_deliver 2) with an event each.
    let frames = read_until(&mut c, |f| {
        f.iter()
            .filter(|f| f["subject"].as_str().is_some_and(|s| s.ends_with(".dead")))
            .count()
            == 2
    })
    .await;
    let acked: Vec<(u64, &str)> = frames
        .iter()
        .filter(|f| f["type"] == "stream_acked")
        .map(|f| (f["seq"].as_u64().unwrap(), f["op"].as_str().unwrap()))
        .collect();
    assert_eq!(acked, [(1, "ack"), (2, "term"), (3, "nak"), (5, "ack")]);
    let mut again = events(&frames);
    again.sort();
    assert_eq!(again, [(3, 2), (4, 2)], "{frames:?}");
    let mut dead: Vec<u64> = frames
        .iter()
        .filter(|f| f["type"] == "event")
        .map(|f| {
            assert_eq!(f["subject"], "$streams.work.d.dead", "{f}");
            assert_eq!(f["body"]["deliveries"], 2, "{f}");
            f["body"]["seq"].as_u64().unwrap()
        })
        .collect();
    dead.sort();
    assert_eq!(dead, [3, 4]);

    // Nothing is pending now: an ack of a seq it already acked is refused.
    ack(&mut c, "d", 1, "ack").await;
    let refused = c.recv().await;
    assert_eq!(refused["code"], "not_found", "{refused}");
    let info = publisher
        .call(json!({"type": "stream_info", "stream": "work"}))
        .await
        .unwrap();
    let d = &info["consumers"][0];
    assert_eq!(
        (
            &d["durable"],
            &d["next_seq"],
            &d["pending"],
            &d["dead"],
            &d["consuming"]
        ),
        (&json!("d"), &json!(6), &json!(0), &json!(2), &json!(true)),
        "{info}"
    );

    // New messages keep coming, with `progress` holding one past its ack wait.
    publish(&publisher, "w.b", 1, "work", 6).await;
    let frames = read_until(&mut c, |f| !events(f).is_empty()).await;
    assert_eq!(events(&frames), [(6, 1)]);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        ack(&mut c, "d", 6, "progress").await;
    }
    ack(&mut c, "d", 6, "ack").await;
    let frames = c.drain().await;
    assert!(
        events(&frames).is_empty(),
        "redelivered despite progress: {frames:?}"
    );
    bus.stop().await;
}

#[tokio::test]
async fn one_connection_consumes_a_consumer_which_holds_at_most_max_ack_pending_and_a_filter() {
    let state = tempfile::tempdir().unwrap();
    let bus = bus(state.path(), &[("work", "w.>")]).await;
    let publisher = Bus::connect(&bus.socket, None, &["topics", "streams"])
        .await
        .unwrap();
    for i in 0..40u64 {
        let subject = if i % 2 == 0 { "w.even" } else { "w.odd" };
        publisher.publish(subject, json!(i), false).await.unwrap();
    }
    publish(&publisher, "w.even", 0, "work", 40).await;

    let mut a = speaker(&bus, &["streams"]).await;
    let answer = consume(
        &mut a,
        json!({"stream": "work", "durable": "evens", "subject": "w.even", "max_ack_pending": 5}),
    )
    .await;
    assert_eq!(answer["type"], "consuming", "{answer}");
    let got = read_until(&mut a, |f| events(f).len() == 5).await;
    assert_eq!(
        events(&got).iter().map(|e| e.0).collect::<Vec<_>>(),
        [1, 3, 5, 7, 9],
        "only w.even (seqs 1, 3, …), five at most"
    );
    assert!(
        events(&a.drain().await).is_empty(),
        "more than max_ack_pending out"
    );
    a.send(&json!({"type": "stream_ack", "stream": "work", "durable": "evens", "seq": 1}))
        .await;
    let more = read_until(&mut a, |f| events(f).len() == 1).await;
    assert_eq!(events(&more), [(11, 1)], "one acked, one more");

    // Another connection cannot consume it while `a` does, nor delete it.
    let mut b = speaker(&bus, &["streams"]).await;
    let busy = consume(
        &mut b,
        json!({"stream": "work", "durable": "evens", "subject": "w.even"}),
    )
    .await;
    assert_eq!(busy["code"], "consumer_busy", "{busy}");
    b.send(&json!({"type": "consumer_delete", "rid": 1, "stream": "work", "durable": "evens"}))
        .await;
    assert_eq!(b.recv().await["code"], "consumer_busy");
    // A changed filter is refused; an unknown stream is not_found.
    a.send(&json!({"type": "unconsume", "rid": 2, "stream": "work", "durable": "evens"}))
        .await;
    let unconsumed = read_until(&mut a, |f| f.iter().any(|f| f["rid"] == 2)).await;
    assert_eq!(unconsumed.last().unwrap()["type"], "unconsumed");
    let changed = consume(
        &mut b,
        json!({"stream": "work", "durable": "evens", "subject": "w.odd"}),
    )
    .await;
    assert_eq!(changed["code"], "bad_request", "{changed}");
    let unknown = consume(&mut b, json!({"stream": "nope", "durable": "x"})).await;
    assert_eq!(unknown["code"], "not_found", "{unknown}");
    // Once `a` let go, `b` takes it and gets what `a` had not acked, again.
    let taken = consume(
        &mut b,
        json!({"stream": "work", "durable": "evens", "subject": "w.even"}),
    )
    .await;
    assert_eq!(taken["type"], "consuming", "{taken}");
    assert_eq!(taken["pending"], 5);
    let again = read_until(&mut b, |f| events(f).len() == 5).await;
    assert_eq!(events(&again), [(3, 2), (5, 2), (7, 2), (9, 2), (11, 2)]);
    b.send(&json!({"type": "consumer_delete", "rid": 3, "stream": "work", "durable": "evens"}))
        .await;
    let deleted = read_until(&mut b, |f| f.iter().any(|f| f["rid"] == 3)).await;
    assert_eq!(deleted.last().unwrap()["type"], "consumer_deleted");
    bus.stop().await;
}

#[tokio::test]
async fn a_consumer_far_behind_is_paced_to_its_reader_and_gets_everything_in_order() {
    let state = tempfile::tempdir().unwrap();
    let bus = bus(state.path(), &[("work", "w.>")]).await;
    let publisher = Bus::connect(&bus.socket, None, &["topics", "streams"])
        .await
        .unwrap();
    // 2 KB each, so the socket's buffer holds few of them.
    let body = "x".repeat(2000);
    for _ in 0..3000 {
        publisher.publish("w.x", json!(body), false).await.unwrap();
    }
    publish(&publisher, "w.x", 0, "work", 3000).await;
    let mut c = speaker(&bus, &["streams"]).await;
    let answer = consume(
        &mut c,
        json!({"stream": "work", "durable": "slow", "max_ack_pending": 10000}),
    )
    .await;
    assert_eq!(answer["type"], "consuming", "{answer}");
    // Not read for a while: the bus holds about an outbox, not the backlog.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let info = publisher
        .call(json!({"type": "stream_info", "stream": "work"}))
        .await
        .unwrap();
    let pending = info["consumers"][0]["pending"].as_u64().unwrap();
    assert!(
        pending < 1000,
        "{pending} sent to a client that reads nothing"
    );
    let got = read_until(&mut c, |f| events(f).len() == 3000).await;
    let seqs: Vec<u64> = events(&got).iter().map(|e| e.0).collect();
    assert_eq!(seqs, (1..=3000).collect::<Vec<_>>());
    bus.stop().await;
}

/// The next `n` events of `sub`, by seq, with their delivery counts.
async fn take(sub: &mut hookbus::client::Subscription, n: usize) -> BTreeMap<u64, u64> {
    let mut got = BTreeMap::new();
    while got.len() < n {
        let e = tokio::time::timeout(WAIT, sub.recv())
            .await
            .expect("no event within the wait limit")
            .expect("connection closed");
        assert_eq!(e["type"], "stream_event", "{e}");
        got.insert(
            e["seq"].as_u64().unwrap(),
            e["deliveries"].as_u64().unwrap(),
        );
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_resumes_after_its_client_and_the_daemon_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, state, file) = (
        dir.path().join("bus.sock"),
        dir.path().join("state"),
        dir.path().join("streams.yaml"),
    );
    std::fs::write(&file, "streams:\n  - name: work\n    subjects: [\"w.>\"]\n").unwrap();
    let mut daemon = serve(&socket, &state, &file);
    let publisher = bus_when_up(&socket, &["topics", "streams"]).await;
    publish(&publisher, "w.x", 10, "work", 10).await;

    // A first client takes all ten, acks six, and goes away.
    {
        let c = Bus::connect(&socket, None, &["streams"]).await.unwrap();
        let mut sub = c.consume("work", "d", json!({})).await.unwrap();
        let got = take(&mut sub, 10).await;
        assert!(got.values().all(|&d| d == 1), "{got:?}");
        for seq in 1..=6 {
            c.stream_ack("work", "d", seq, "ack", None).await.unwrap();
        }
    }
    // The next one gets the four unacked again, then new messages. (The bus
    // may not have seen the first go yet: it is busy until then.)
    let c = Bus::connect(&socket, None, &["streams"]).await.unwrap();
    let deadline = Instant::now() + WAIT;
    let mut sub = loop {
        match c.consume("work", "d", json!({})).await {
            Ok(sub) => break sub,
            Err(e) if e.to_string().contains("consumer_busy") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let got = take(&mut sub, 4).await;
    assert_eq!(got, BTreeMap::from([(7, 2), (8, 2), (9, 2), (10, 2)]));
    c.stream_ack("work", "d", 7, "ack", None).await.unwrap();
    c.stream_ack("work", "d", 8, "ack", None).await.unwrap();
    publish(&publisher, "w.x", 2, "work", 12).await;
    let got = take(&mut sub, 2).await;
    assert_eq!(got, BTreeMap::from([(11, 1), (12, 1)]));
    c.stream_ack("work", "d", 11, "ack", None).await.unwrap();

    // SIGKILL: what was acked stays acked, the rest comes again, counted.
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    drop((sub, c, publisher));
    let _ = std::fs::remove_file(&socket);
    let _daemon = serve(&socket, &state, &file);
    let publisher = bus_when_up(&socket, &["topics", "streams"]).await;
    let c = Bus::connect(&socket, None, &["streams"]).await.unwrap();
    let mut sub = c.consume("work", "d", json!({})).await.unwrap();
    let got = take(&mut sub, 3).await;
    assert_eq!(got, BTreeMap::from([(9, 3), (10, 3), (12, 2)]));
    publish(&publisher, "w.x", 1, "work", 13).await;
    let got = take(&mut sub, 1).await;
    assert_eq!(got, BTreeMap::from([(13, 1)]), "the cursor went on from 12");
}

#[tokio::test]
async fn hookbus_stream_consume_prints_acks_and_goes_on_where_it_stopped() {
    let state = tempfile::tempdir().unwrap();
    let bus = bus(state.path(), &[("work", "w.>")]).await;
    let publisher = Bus::connect(&bus.socket, None, &["topics", "streams"])
        .await
        .unwrap();
    publish(&publisher, "w.x", 3, "work", 3).await;
    let consume = |max: &str| {
        let socket = bus.socket.clone();
        let max = max.to_owned();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(crate::common::bin())
                .arg("--socket")
                .arg(&socket)
                .args(["stream", "consume", "work", "cli", "--max", &max])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap()
        })
    };
    let first = consume("2").await.unwrap();
    assert_eq!(first, "1 w.x {\"n\":0}\n2 w.x {\"n\":1}\n");
    let second = consume("1").await.unwrap();
    assert_eq!(
        second, "3 w.x {\"n\":2}\n",
        "acked ones are not printed again"
    );
    bus.stop().await;
}

/// A client that reads one frame and acks it before reading the next (its
/// acks can only be read while its outbox is not holding it back) gets a
/// long backlog through without being cut as a slow consumer.
#[tokio::test]
async fn a_consumer_that_acks_each_message_before_reading_on_is_never_cut() {
    let state = tempfile::tempdir().unwrap();
    // The daemon's default outbox: 4096 frames, high water at 2048.
    let bus = bus_with_outbox(state.path(), &[("work", "w.>")], 4096).await;
    let publisher = Bus::connect(&bus.socket, None, &["topics", "streams"])
        .await
        .unwrap();
    let n = 20_000;
    publish(&publisher, "w.x", n, "work", n).await;
    let mut c = speaker(&bus, &["streams"]).await;
    let answer = consume(
        &mut c,
        json!({"stream": "work", "durable": "steady", "max_ack_pending": 10000}),
    )
    .await;
    assert_eq!(answer["type"], "consuming", "{answer}");
    let mut next = 1;
    while next <= n {
        let f = c.recv().await;
        match f["type"].as_str() {
            Some("stream_event") => {
                assert_eq!(f["seq"], next, "{f}");
                ack(&mut c, "steady", next, "ack").await;
                next += 1;
            }
            Some("stream_acked") => {}
            _ => panic!("{f}"),
        }
    }
    let info = publisher
        .call(json!({"type": "stream_info", "stream": "work"}))
        .await
        .unwrap();
    assert_eq!(info["consumers"][0]["next_seq"], n + 1, "{info}");
    bus.stop().await;
}

/// Nothing is delivered over the frame limit: a publish kept in a stream
/// leaves room for the larger `stream_event` it becomes.
#[tokio::test]
async fn a_publish_kept_in_a_stream_must_fit_as_a_stream_event() {
    let state = tempfile::tempdir().unwrap();
    let streams = vec![crate::streams::stream("work", &["w.>"])];
    let bus = store_bus(state.path(), streams, |c| c.max_frame_len = 4096).await;
    let mut c = speaker(&bus, &["topics", "streams"]).await;
    let body = json!("x".repeat(3700));
    c.send(&json!({"type": "publish", "subject": "elsewhere", "body": body}))
        .await;
    assert!(c.sync().await.is_empty(), "fits as an event");
    c.send(&json!({"type": "publish", "subject": "w.x", "body": body}))
        .await;
    let refused = c.sync().await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["code"], "frame_too_large", "{refused:?}");
    assert!(refused[0]["detail"].as_str().unwrap().contains("stream"));
    bus.stop().await;
}
