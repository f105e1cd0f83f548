//! Flow control (issue 9, item 1): a receiver that reads is never cut because of
//! someone else's burst; the burst's sender is held back instead. A receiver that
//! stops reading is still cut, after the stall timeout, and holds nobody for ever.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

use crate::common::{TestBus, WAIT};
use crate::hooks::frames;

/// Reads `n` frames from `stream` without parsing them; the time it took.
async fn read_frames(mut stream: UnixStream, n: usize) -> Result<Duration, String> {
    let started = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let (mut have, mut seen) = (0usize, 0usize);
    let mut header = [0u8; 4];
    let mut in_header = 0usize;
    let mut body_left = 0usize;
    while seen < n {
        let read = tokio::time::timeout(WAIT, stream.read(&mut buf[..]))
            .await
            .map_err(|_| format!("stalled after {seen} of {n} frames"))?
            .map_err(|e| format!("read failed after {seen} frames: {e}"))?;
        if read == 0 {
            return Err(format!("closed after {seen} of {n} frames"));
        }
        have += read;
        let mut i = 0;
        while i < read {
            if body_left > 0 {
                let take = body_left.min(read - i);
                body_left -= take;
                i += take;
                if body_left == 0 {
                    seen += 1;
                }
                continue;
            }
            header[in_header] = buf[i];
            in_header += 1;
            i += 1;
            if in_header == 4 {
                in_header = 0;
                body_left = u32::from_be_bytes(header) as usize;
            }
        }
    }
    let _ = have;
    Ok(started.elapsed())
}

fn burst(to: &str, n: usize) -> Vec<u8> {
    let messages: Vec<Value> = (0..n)
        .map(|i| json!({"type": "message", "to": to, "id": i.to_string(), "ts": 0, "body": {"i": i}}))
        .collect();
    frames(&messages)
}

#[tokio::test]
async fn a_burst_to_a_reading_receiver_arrives_whole() {
    const N: usize = 20_000;
    let bus = TestBus::start().await;
    let rx = bus.registered("rx").await;
    let reader = tokio::spawn(read_frames(rx.stream, N));
    let mut tx = bus.raw().await;
    tx.send_bytes(&burst("rx", N)).await;
    reader.await.unwrap().unwrap();
    assert!(tx.sync().await.is_empty());
    assert_eq!(
        bus.status().await["counters"]["slow_consumer_disconnects"],
        0
    );
    bus.stop().await;
}

#[tokio::test]
async fn broadcasts_to_many_reading_endpoints_arrive_whole() {
    const N: usize = 6_000;
    const ENDPOINTS: usize = 200;
    let bus = TestBus::start().await;
    let mut readers = Vec::new();
    for i in 0..ENDPOINTS {
        let rx = bus.registered(&format!("rx-{i}")).await;
        readers.push(tokio::spawn(read_frames(rx.stream, N)));
    }
    let mut tx = bus.raw().await;
    tx.send_bytes(&burst("", N)).await;
    for reader in readers {
        reader.await.unwrap().unwrap();
    }
    assert!(tx.sync().await.is_empty());
    assert_eq!(
        bus.status().await["counters"]["slow_consumer_disconnects"],
        0
    );
    bus.stop().await;
}

#[tokio::test]
async fn a_stalled_receiver_is_cut_and_holds_its_sender_only_for_the_stall_timeout() {
    const N: usize = 20_000;
    let stall = Duration::from_millis(500);
    let bus = TestBus::start_with(|c| c.slow_consumer_timeout = stall).await;
    let mut stalled = bus.registered("stalled").await; // never reads
    let healthy = bus.registered("healthy").await;
    let reader = tokio::spawn(read_frames(healthy.stream, N));
    let mut tx = bus.raw().await;
    let started = Instant::now();
    // Broadcasts: both receive, one of them never reads.
    tx.send_bytes(&burst("", N)).await;
    // The healthy receiver gets everything; the sender was held for about the
    // stall timeout, not for ever.
    reader.await.unwrap().unwrap();
    assert!(tx.sync().await.is_empty());
    let took = started.elapsed();
    assert!(took < WAIT * 2, "held for {took:?}");
    let status = bus.status().await;
    assert_eq!(
        status["counters"]["slow_consumer_disconnects"], 1,
        "{status}"
    );
    // It gets what the kernel had buffered (the reason frame too, unless the cut
    // came in the middle of a frame), then the connection ends.
    let rest = stalled.until_eof().await;
    assert!(rest.len() < N);
    eprintln!("held back {took:?} by a receiver that stopped reading (stall timeout {stall:?})");
    bus.stop().await;
}

#[tokio::test]
async fn bursts_from_many_senders_at_once_reach_a_reading_receiver_whole_and_in_order() {
    // Each sender has up to about 2048 requests on their way when it is held
    // back: eight of them overshoot a 64-frame outbox many times over. What does
    // not fit waits, in order, instead of getting the receiver cut.
    const SENDERS: usize = 8;
    const EACH: usize = 5_000;
    let bus = TestBus::start_with(|c| c.outbox_capacity = 64).await;
    let mut rx = bus.registered("rx").await;
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let mut tx = bus.raw().await;
        let messages: Vec<Value> = (0..EACH)
            .map(|i| json!({"type": "message", "to": "rx", "body": {"s": s, "i": i}}))
            .collect();
        senders.push(tokio::spawn(async move {
            tx.send_bytes(&frames(&messages)).await;
            tx
        }));
    }
    let mut next = [0u64; SENDERS];
    for _ in 0..SENDERS * EACH {
        let m = rx.recv().await;
        let s = m["body"]["s"].as_u64().unwrap() as usize;
        assert_eq!(m["body"]["i"], next[s], "sender {s} out of order");
        next[s] += 1;
    }
    for s in senders {
        assert!(s.await.unwrap().sync().await.is_empty());
    }
    let status = bus.status().await;
    assert_eq!(
        status["counters"]["slow_consumer_disconnects"], 0,
        "{status}"
    );
    bus.stop().await;
}

#[tokio::test]
async fn what_a_client_sent_before_it_left_is_delivered_even_if_it_read_nothing() {
    // It asks for acks, never reads them, sends a burst and leaves while it is
    // held back: the bus can no longer write to it, but it still reads, in
    // turn, everything the client sent.
    const N: usize = 5_000;
    let bus = TestBus::start_with(|c| c.outbox_capacity = 64).await;
    let rx = bus.registered("rx").await;
    let mut tx = bus.raw().await;
    tx.hello_acks().await;
    // Written while the receiver is not read yet, then the sender leaves.
    let sender = tokio::spawn(async move {
        tx.send_bytes(&burst("rx", N)).await;
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    read_frames(rx.stream, N).await.unwrap();
    sender.await.unwrap();
    bus.stop().await;
}

#[tokio::test]
async fn a_client_that_half_closes_with_frames_waiting_still_gets_them_all() {
    // It reads nothing while messages queue for it (more than the socket holds,
    // so the writer is stuck in a batch, and more than one batch), then shuts
    // its write side: the bus closes the session gracefully in the middle of a
    // batch and goes on writing what was queued. (The writer once panicked
    // there, polling the spent close signal, and lost the batches after.)
    const N: u64 = 1_000;
    let bus = TestBus::start().await;
    let mut rx = bus.registered("rx").await;
    let mut tx = bus.raw().await;
    let pad = "x".repeat(2_000);
    for q in 0..N {
        tx.send(&json!({"type": "message", "to": "rx", "body": {"q": q, "pad": pad}}))
            .await;
    }
    assert!(tx.sync().await.is_empty());
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::io::AsyncWriteExt::shutdown(&mut rx.stream)
        .await
        .unwrap();
    let got: Vec<u64> = rx
        .until_eof()
        .await
        .iter()
        .map(|m| m["body"]["q"].as_u64().unwrap())
        .collect();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    bus.stop().await;
}
