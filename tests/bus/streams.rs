//! Feature `streams`: publishes kept in declared streams, trimmed, replayed,
//! and a daemon killed while it appends.

use std::path::Path;
use std::time::{Duration, Instant};

use hookbus::client::Bus;
use hookbus::store::streams::StreamConfig;
use hookbus::store::{StoreConfig, SyncPolicy};
use serde_json::{json, Value};

use crate::common::{bus_when_up, serve_process, Daemon, Raw, TestBus, WAIT};
use crate::topics::speaker;

pub fn stream(name: &str, subjects: &[&str]) -> StreamConfig {
    StreamConfig {
        name: name.into(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        max_messages: None,
        max_bytes: None,
        max_age_s: None,
    }
}

/// A bus with a store in `state` (sync normal) keeping `streams`, then
/// `configure`d.
pub async fn store_bus(
    state: &Path,
    streams: Vec<StreamConfig>,
    configure: impl FnOnce(&mut hookbus::server::Config),
) -> TestBus {
    let dir = state.to_owned();
    TestBus::start_with(move |c| {
        let mut store = StoreConfig::new(dir, SyncPolicy::Normal);
        store.streams = streams;
        c.store = Some(store);
        configure(c);
    })
    .await
}

async fn bus_with(state: &Path, streams: Vec<StreamConfig>) -> TestBus {
    // Small outboxes, so pacing shows: 128 frames is high water.
    store_bus(state, streams, |c| c.outbox_capacity = 256).await
}

/// Every frame of one replay, through `replay_end`.
async fn replay(c: &mut Raw, request: Value) -> (Value, Vec<Value>) {
    c.send(&request).await;
    let first = c.recv().await;
    if first["type"] != "replaying" {
        return (first, Vec::new());
    }
    let mut events = Vec::new();
    loop {
        let f = c.recv().await;
        if f["type"] == "replay_end" {
            return (first, events);
        }
        assert_eq!(f["type"], "stream_event", "{f}");
        events.push(f);
    }
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

/// Publishes with acks, so the stream has them once this returns... almost:
/// appends go to the store after delivery, so wait for the count too.
async fn publish_all(bus: &TestBus, c: &Bus, subject: &str, n: u64, stream: &str, total: u64) {
    for i in 0..n {
        c.publish(subject, json!({"n": i}), false).await.unwrap();
    }
    bus.wait_for_stream(stream, total).await;
}

impl TestBus {
    async fn wait_for_stream(&self, stream: &str, last_seq: u64) {
        let c = Bus::connect(&self.socket, None, &["streams"])
            .await
            .unwrap();
        wait_for_stream(&c, stream, last_seq).await;
    }
}

/// Waits until `stream` holds `last_seq` (appends reach the store after
/// delivery), asking through `c` (feature `streams`).
pub async fn wait_for_stream(c: &Bus, stream: &str, last_seq: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let info = c
            .call(json!({"type": "stream_info", "stream": stream}))
            .await
            .unwrap();
        if info["last_seq"].as_u64() >= Some(last_seq) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stream {stream} stayed at {info}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A client flooding a stream's subject is held back while the store is behind
/// (here: more than 4 KiB of appends waiting), so the stream keeps every
/// publish instead of dropping them or piling them up in memory; a client on
/// another subject is not held.
#[tokio::test]
async fn a_publisher_to_a_stream_waits_for_the_store_instead_of_losing_appends() {
    let state = tempfile::tempdir().unwrap();
    let bus = store_bus(state.path(), vec![stream("log", &["log.>"])], |c| {
        c.store.as_mut().unwrap().append_backlog = 4096;
    })
    .await;
    let mut flood = speaker(&bus, &["topics"]).await;
    let n = 20_000u64;
    let mut bytes = Vec::new();
    for i in 0..n {
        let text = json!({"type": "publish", "subject": "log.x", "body": {"n": i}}).to_string();
        bytes.extend_from_slice(&(text.len() as u32).to_be_bytes());
        bytes.extend_from_slice(text.as_bytes());
    }
    flood.send_bytes(&bytes).await;
    // Not held: its publishes are not kept in a stream.
    let mut other = speaker(&bus, &["topics", "acks"]).await;
    other
        .send(&json!({"type": "publish", "subject": "chat.x", "body": 1}))
        .await;
    assert_eq!(other.recv().await["type"], "ack");
    bus.wait_for_stream("log", n).await;
    let status = bus.status().await;
    assert_eq!(status["counters"]["stream_drops"], 0, "{status}");
    assert!(
        status["counters"]["store_waits"].as_u64() > Some(0),
        "{status}"
    );
    let status = bus
        .wait_status("the backlog to empty", |s| {
            s["store"]["append_backlog"] == 0
        })
        .await;
    assert_eq!(status["counters"]["publishes"], n + 1);
    bus.stop().await;
}

#[tokio::test]
async fn streams_keep_what_is_published_on_their_subjects_and_trim_by_count_bytes_and_age() {
    let state = tempfile::tempdir().unwrap();
    let mut by_count = stream("count", &["c.>"]);
    by_count.max_messages = Some(100);
    let mut by_bytes = stream("bytes", &["b.>"]);
    by_bytes.max_bytes = Some(10_000);
    let mut by_age = stream("age", &["a.>"]);
    by_age.max_age_s = Some(0.5);
    let bus = bus_with(state.path(), vec![by_count, by_bytes, by_age]).await;
    let c = Bus::connect(&bus.socket, None, &["topics", "streams"])
        .await
        .unwrap();
    publish_all(&bus, &c, "c.x", 250, "count", 250).await;
    // Not on a stream's subjects: not kept anywhere.
    c.publish("elsewhere", json!(1), false).await.unwrap();
    let info = c
        .call(json!({"type": "stream_info", "stream": "count"}))
        .await
        .unwrap();
    assert_eq!(
        (
            info["messages"].as_u64(),
            info["first_seq"].as_u64(),
            info["last_seq"].as_u64()
        ),
        (Some(100), Some(151), Some(250)),
        "{info}"
    );
    let mut raw = speaker(&bus, &["streams"]).await;
    let (gone, _) = replay(
        &mut raw,
        json!({"type": "replay", "rid": 1, "stream": "count", "from": {"seq": 150}}),
    )
    .await;
    assert_eq!(
        (&gone["code"], &gone["rid"]),
        (&json!("seq_gone"), &json!(1)),
        "{gone}"
    );
    let (_, events) = replay(
        &mut raw,
        json!({"type": "replay", "stream": "count", "from": {"seq": 151}}),
    )
    .await;
    assert_eq!(seqs(&events), (151..=250).collect::<Vec<_>>());
    assert_eq!(events[0]["body"], json!({"n": 150}));
    // Bytes: about 100 bytes a message, 10 000 at most.
    publish_all(&bus, &c, "b.x", 500, "bytes", 500).await;
    let info = c
        .call(json!({"type": "stream_info", "stream": "bytes"}))
        .await
        .unwrap();
    assert!(info["bytes"].as_u64().unwrap() <= 10_000, "{info}");
    assert!(info["messages"].as_u64().unwrap() >= 50, "{info}");
    assert_eq!(info["last_seq"], 500);
    // Age: gone about half a second later.
    publish_all(&bus, &c, "a.x", 10, "age", 10).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let info = c
            .call(json!({"type": "stream_info", "stream": "age"}))
            .await
            .unwrap();
        if info["messages"] == 0 {
            assert_eq!(info["first_seq"], 11, "{info}");
            break;
        }
        assert!(Instant::now() < deadline, "not trimmed by age: {info}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list = c.call(json!({"type": "stream_list"})).await.unwrap();
    assert_eq!(list["streams"].as_array().unwrap().len(), 3);
    bus.stop().await;
}

#[tokio::test]
async fn replay_starts_where_asked_filters_by_subject_and_paces_a_long_one() {
    let state = tempfile::tempdir().unwrap();
    let bus = bus_with(state.path(), vec![stream("all", &["r.>"])]).await;
    let c = Bus::connect(&bus.socket, None, &["topics", "streams"])
        .await
        .unwrap();
    let pad = "x".repeat(1000);
    for i in 0..3000u64 {
        let subject = if i % 3 == 0 { "r.three" } else { "r.other" };
        c.publish(subject, json!({"n": i, "pad": pad}), false)
            .await
            .unwrap();
    }
    bus.wait_for_stream("all", 3000).await;
    let mut raw = speaker(&bus, &["streams"]).await;
    let (first, events) = replay(
        &mut raw,
        json!({"type": "replay", "rid": "a", "stream": "all"}),
    )
    .await;
    assert_eq!(
        (&first["rid"], &first["last_seq"]),
        (&json!("a"), &json!(3000)),
        "{first}"
    );
    assert_eq!(
        seqs(&events),
        (1..=3000).collect::<Vec<_>>(),
        "every message, in order"
    );
    let id = events[1999]["id"].clone();
    let ts = events[2999]["ts_ms"].clone();
    let (_, three) = replay(
        &mut raw,
        json!({"type": "replay", "stream": "all", "subject": "r.three"}),
    )
    .await;
    assert_eq!(three.len(), 1000);
    assert!(three.iter().all(|e| e["subject"] == "r.three"));
    let (_, from_id) = replay(
        &mut raw,
        json!({"type": "replay", "stream": "all", "from": {"id": id}}),
    )
    .await;
    assert_eq!(seqs(&from_id).first(), Some(&2000));
    let (_, from_time) = replay(
        &mut raw,
        json!({"type": "replay", "stream": "all", "from": {"time_ms": ts}}),
    )
    .await;
    assert!(from_time.last().is_some_and(|e| e["seq"] == 3000));
    let (_, last) = replay(
        &mut raw,
        json!({"type": "replay", "stream": "all", "from": "last"}),
    )
    .await;
    assert_eq!(seqs(&last), [3000]);
    let (new, none) = replay(
        &mut raw,
        json!({"type": "replay", "stream": "all", "from": "new"}),
    )
    .await;
    assert_eq!((new["type"].as_str(), none.len()), (Some("replaying"), 0));
    for from in [
        json!({"seq": u64::MAX}),
        json!({"time_ms": u64::MAX}),
        json!({"seq": 3001}),
    ] {
        let (_, none) = replay(
            &mut raw,
            json!({"type": "replay", "stream": "all", "from": from}),
        )
        .await;
        assert!(
            none.is_empty(),
            "from {from}: {} events past the end",
            none.len()
        );
    }
    let (missing, _) = replay(&mut raw, json!({"type": "replay", "stream": "nope"})).await;
    assert_eq!(missing["code"], "not_found");
    // A client that reads nothing holds a chunk past high water, not the
    // stream's 3 MB.
    let mut idle = speaker(&bus, &["streams"]).await;
    idle.send(&json!({"type": "replay", "stream": "all"})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = bus.status().await;
    let used = status["memory"]["used"].as_u64().unwrap();
    assert!(used < 1_000_000, "an idle replay holds {used} bytes");
    let (_, rest) = {
        let mut events = Vec::new();
        loop {
            let f = idle.recv().await;
            match f["type"].as_str() {
                Some("replay_end") => break (f, events),
                Some("stream_event") => events.push(f),
                _ => {}
            }
        }
    };
    assert_eq!(rest.len(), 3000, "paced, but complete");
    bus.stop().await;
}

/// `hookbus serve` as a process with a store in `state` and the streams of `streams`.
pub fn serve(socket: &Path, state: &Path, streams: &Path) -> Daemon {
    let (sync, state_dir, streams_file) = ("--sync=normal", "--state-dir", "--streams");
    serve_process(
        socket,
        [
            sync.as_ref(),
            state_dir.as_ref(),
            state.as_os_str(),
            streams_file.as_ref(),
            streams.as_os_str(),
        ],
    )
}

async fn up(socket: &Path) -> Bus {
    bus_when_up(socket, &["topics", "streams"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_append_keeps_a_gap_free_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, state, file) = (
        dir.path().join("bus.sock"),
        dir.path().join("state"),
        dir.path().join("streams.yaml"),
    );
    std::fs::write(
        &file,
        "streams:\n  - name: log\n    subjects: [\"log.>\"]\n",
    )
    .unwrap();
    let mut daemon = serve(&socket, &state, &file);
    let c = up(&socket).await;
    let publisher = tokio::spawn(async move {
        let mut sent = 0u64;
        while c.publish("log.x", json!({"n": sent}), false).await.is_ok() {
            sent += 1;
        }
        sent
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    daemon.0.kill().unwrap(); // SIGKILL
    daemon.0.wait().unwrap();
    let sent = publisher.await.unwrap();
    let _ = std::fs::remove_file(&socket);
    let _daemon = serve(&socket, &state, &file);
    let c = up(&socket).await;
    let mut events = c.replay("log", json!("first"), None).await.unwrap();
    let mut n = 0u64;
    loop {
        let e = tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap()
            .unwrap();
        if e["type"] == "replay_end" {
            break;
        }
        n += 1;
        assert_eq!(e["seq"], n, "a gap in the stream: {e}");
        assert_eq!(e["body"]["n"], n - 1, "stored out of publish order: {e}");
    }
    assert!(n > 10 && n <= sent, "kept {n} of {sent}");
    // Appends go on after the last kept seq.
    c.publish("log.x", json!("after"), false).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let info = c
            .call(json!({"type": "stream_info", "stream": "log"}))
            .await
            .unwrap();
        if info["last_seq"] == n + 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{info}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
