//! Sections 3 and 4 of the core issue: bad input, churn, slow consumers, and
//! graceful shutdown. Whatever one connection does, the others keep working.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{TestBus, WAIT};

#[tokio::test]
async fn oversized_length_prefix_gets_frame_too_large_then_close() {
    let bus = TestBus::start_with(|c| c.max_frame_len = 1024).await;
    let mut bad = bus.raw().await;
    bad.send(&json!({"type": "ping"})).await;
    // Claims 4 GiB; the server must answer without waiting for (or allocating) it.
    bad.send_bytes(&u32::MAX.to_be_bytes()).await;
    let frames = bad.until_eof().await;
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0]["type"], "pong");
    assert_eq!(frames[1]["code"], "frame_too_large");
    assert!(frames[1]["detail"].as_str().unwrap().contains("1024"));

    // Just over the configured limit is rejected too; at the limit is fine.
    let mut at_limit = bus.raw().await;
    let body = "x".repeat(1024 - r#"{"type":"ping","p":""}"#.len());
    at_limit
        .send_payload(format!(r#"{{"type":"ping","p":"{body}"}}"#).as_bytes())
        .await;
    assert_eq!(at_limit.recv().await["type"], "pong");
    at_limit
        .send_payload(format!(r#"{{"type":"ping","p":"{body}x"}}"#).as_bytes())
        .await;
    assert_eq!(at_limit.recv().await["code"], "frame_too_large");
    bus.stop().await;
}

#[tokio::test]
async fn bad_frames_are_answered_and_the_connection_stays_usable() {
    let bus = TestBus::start().await;
    let mut rx = bus.registered("rx").await;
    let mut c = bus.raw().await;
    let cases: [(&[u8], &str); 6] = [
        (b"\xff\xfe\xfd", "bad_frame"),
        (b"{\"type\":", "bad_frame"),
        (b"[1,2,3]", "bad_frame"),
        (b"42", "bad_frame"),
        (b"", "bad_frame"),
        (b"{\"type\":\"ping\"} trailing", "bad_frame"),
    ];
    for (payload, code) in cases {
        c.send_payload(payload).await;
        let error = c.recv().await;
        assert_eq!(error["type"], "error");
        assert_eq!(error["code"], code, "{payload:?} → {error}");
    }
    c.send(&json!({"type": "message", "to": "rx", "body": "still works"}))
        .await;
    assert_eq!(rx.recv().await["body"], "still works");
    assert_eq!(bus.status().await["counters"]["bad_frames"], 6);
    // A well-formed frame that asks for something wrong counts apart.
    c.send(&json!({"type": "register"})).await;
    assert_eq!(c.recv().await["code"], "bad_request");
    c.send(&json!({"type": "no_such_type"})).await;
    assert_eq!(c.recv().await["code"], "unknown_type");
    c.send(&json!({"type": "publish", "subject": "a"})).await;
    assert_eq!(c.recv().await["code"], "not_negotiated");
    let counters = &bus.status().await["counters"];
    assert_eq!(counters["bad_frames"], 6);
    assert_eq!(counters["bad_requests"], 3);
    bus.stop().await;
}

#[tokio::test]
async fn unknown_types_and_bad_fields_are_named() {
    let bus = TestBus::start().await;
    let mut c = bus.raw().await;
    let cases: [(Value, &str, &str); 6] = [
        (json!({"type": "teleport"}), "unknown_type", "teleport"),
        (json!({"to": "x"}), "bad_request", "`type`"),
        (json!({"type": 7}), "bad_request", "`type`"),
        (json!({"type": "register"}), "bad_request", "`endpoint`"),
        (
            json!({"type": "register", "endpoint": ["x"]}),
            "bad_request",
            "`endpoint`",
        ),
        (
            json!({"type": "message", "to": {"name": "x"}}),
            "bad_request",
            "`to`",
        ),
    ];
    for (request, code, names) in cases {
        c.send(&request).await;
        let error = c.recv().await;
        assert_eq!(error["code"], code, "{request} → {error}");
        assert!(
            error["detail"].as_str().unwrap().contains(names),
            "{request} → {error}"
        );
    }
    assert!(c.sync().await.is_empty());
    bus.stop().await;
}

#[tokio::test]
async fn truncated_frames_abrupt_disconnects_and_churn_leak_nothing() {
    let bus = TestBus::start().await;
    let mut a = bus.registered("a").await;
    let mut sender = bus.raw().await;
    for i in 0..300u32 {
        let mut c = bus.raw().await;
        match i % 5 {
            0 => {}                                               // connect, leave
            1 => c.send_bytes(&[0, 0]).await,                     // half a header
            2 => c.send_bytes(&[0, 0, 0, 100, b'{', b'"']).await, // half a payload
            3 => {
                c.send(&json!({"type": "register", "endpoint": format!("churn-{i}")}))
                    .await
            }
            _ => {
                c.send(&json!({"type": "message", "to": "a", "body": i}))
                    .await
            }
        }
        drop(c);
        if i % 50 == 0 {
            sender
                .send(&json!({"type": "message", "to": "a", "body": "alive"}))
                .await;
        }
    }
    // Every churned message and every probe arrived, in order per sender.
    let mut got = 0;
    while got < 60 + 6 {
        let m = a.recv().await;
        assert_eq!(m["type"], "message");
        got += 1;
    }
    // Only `a`, `sender` and the status query itself remain.
    let status = bus
        .wait_status("churned connections to close", |s| s["connections"] == 3)
        .await;
    assert_eq!(
        status["endpoints"].as_object().unwrap().len(),
        1,
        "{status}"
    );
    bus.stop().await;
}

#[tokio::test]
async fn one_clients_garbage_never_disturbs_other_traffic() {
    let bus = TestBus::start_with(|c| c.max_frame_len = 64 * 1024).await;
    let mut rx = bus.registered("rx").await;
    let mut tx = bus.raw().await;
    let garbage = async {
        let mut rng = 0x9E3779B97F4A7C15u64;
        for _ in 0..200 {
            let mut c = bus.raw().await;
            let mut junk = vec![0u8; 64];
            for b in &mut junk {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                *b = rng as u8;
            }
            let _ = tokio::io::AsyncWriteExt::write_all(&mut c.stream, &junk).await;
        }
    };
    let traffic = async {
        for i in 0..2000 {
            tx.send(&json!({"type": "message", "to": "rx", "body": i}))
                .await;
        }
        for i in 0..2000 {
            assert_eq!(rx.recv().await["body"], i);
        }
    };
    tokio::join!(garbage, traffic);
    bus.stop().await;
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_disconnected_without_slowing_others() {
    const N: usize = 3000;
    let bus = TestBus::start_with(|c| {
        c.outbox_capacity = 64;
        c.outbox_max_bytes = 256 * 1024;
        // The broadcaster is held back while the slow reader's outbox is full,
        // for this long at most (see flow control in docs/PROTOCOL.md).
        c.slow_consumer_timeout = Duration::from_millis(300);
    })
    .await;
    let mut slow = bus.registered("slow").await; // never reads until the end
    let mut fast = bus.registered("fast").await;
    let mut tx = bus.raw().await;
    let body = "y".repeat(4096);
    let started = std::time::Instant::now();
    let send = async {
        for i in 0..N {
            tx.send(&json!({"type": "message", "body": {"i": i, "pad": body}}))
                .await;
        }
    };
    let receive = async {
        for i in 0..N {
            let m = fast.recv().await;
            assert_eq!(m["body"]["i"], i);
        }
    };
    tokio::join!(send, receive);
    assert!(
        started.elapsed() < WAIT,
        "fast reader was held up: {:?}",
        started.elapsed()
    );

    let status = bus.status().await;
    assert_eq!(
        status["counters"]["slow_consumer_disconnects"], 1,
        "{status}"
    );
    assert!(status["endpoints"].get("slow").is_none());
    // The slow reader gets what the kernel had buffered, then the connection ends.
    let rest = slow.until_eof().await;
    assert!(rest.len() < N, "the slow reader should have lost messages");
    for (i, m) in rest
        .iter()
        .enumerate()
        .filter(|(_, m)| m["type"] == "message")
    {
        assert_eq!(m["body"]["i"], i, "messages before the cut arrive in order");
    }
    bus.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_delivers_what_was_accepted_and_closes_everyone() {
    let bus = TestBus::start().await;
    let mut rx = bus.registered("rx").await;
    let mut tx = bus.raw().await;
    for i in 0..100 {
        tx.send(&json!({"type": "message", "to": "rx", "body": i}))
            .await;
    }
    // Make sure the server read them before it is told to stop.
    assert!(tx.sync().await.is_empty());
    let socket = bus.socket.clone();
    let stopping = tokio::spawn(bus.stop());
    let got = rx.until_eof().await;
    assert_eq!(got.len(), 100);
    assert!(tx.until_eof().await.is_empty());
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap();
    assert!(tokio::net::UnixStream::connect(&socket).await.is_err());
}
