//! The memory budget (issue 9, item 2): partial frames, requests on their way and
//! queued frames all count against one budget, which bounds the daemon's memory
//! whatever clients do, and which is given back whole when they leave.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::common::{Daemon, Raw, TestBus, WAIT};

const MIB: usize = 1024 * 1024;

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// `n` messages to `to` with 10 KB bodies, framed back to back.
fn ten_kb_messages(to: &str, n: usize) -> Vec<u8> {
    let message = json!({"type": "message", "to": to, "body": "x".repeat(10_000)});
    let frame = hookbus::frame::encode(message.to_string().as_bytes());
    frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * n)
        .collect()
}

async fn status(socket: &Path) -> serde_json::Value {
    hookbus::daemon::query_status(socket).await.unwrap()
}

#[tokio::test]
async fn forty_stalled_10_mib_frames_keep_the_daemon_under_its_budget() {
    const BUDGET: usize = 64 * MIB;
    const FRAME: usize = 10 * MIB;
    const CLIENTS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bus.sock");
    let daemon = Daemon(
        std::process::Command::new(crate::common::bin())
            .args(["serve", "--socket"])
            .arg(&socket)
            .arg(format!("--memory-budget={BUDGET}"))
            .env("HOOKBUS_HOOKS", "none")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + WAIT;
    while hookbus::daemon::query_status(&socket).await.is_err() {
        assert!(Instant::now() < deadline, "the daemon did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = rss(daemon.id());
    // Each client sends the header of a 10 MiB frame and 9 MiB of it, then stalls.
    let mut body = (FRAME as u32).to_be_bytes().to_vec();
    body.extend(std::iter::repeat_n(b' ', 9 * MIB));
    let body = std::sync::Arc::new(body);
    let mut writers = Vec::new();
    for _ in 0..CLIENTS {
        let mut c = Raw::connect(&socket).await;
        let body = body.clone();
        // A client the budget holds back cannot write it all: its socket fills.
        writers.push(tokio::spawn(async move {
            let _ = c.stream.write_all(&body).await;
            c
        }));
    }
    // Wait until the daemon has read all it will.
    let mut last = 0;
    let deadline = Instant::now() + WAIT * 2;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let used = status(&socket).await["memory"]["used"].as_u64().unwrap() as usize;
        if used == last && used > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the daemon kept reading");
        last = used;
    }
    let grown = rss(daemon.id()).saturating_sub(before);
    let s = status(&socket).await;
    eprintln!(
        "40 stalled 10 MiB frames: daemon grew by {} MiB, budget {} MiB, {}",
        grown / MIB,
        BUDGET / MIB,
        s["memory"]
    );
    assert!(
        s["memory"]["used"].as_u64().unwrap() as usize <= BUDGET,
        "{s}"
    );
    assert!(s["memory"]["waits"].as_u64().unwrap() > 0, "{s}");
    assert!(
        grown < BUDGET + 16 * MIB,
        "the daemon grew by {grown} bytes with a budget of {BUDGET}"
    );
    // Small traffic goes on meanwhile.
    let mut ping = Raw::connect(&socket).await;
    assert!(ping.sync().await.is_empty());
    // When the clients leave, every byte is given back.
    for w in writers {
        w.abort();
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let s = status(&socket).await;
        // Only the status request itself is left.
        if s["memory"]["used"].as_u64().unwrap() < 64 {
            break;
        }
        assert!(Instant::now() < deadline, "budget not given back: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(daemon);
}

#[tokio::test]
async fn while_the_budget_is_spent_the_receiver_holding_it_is_cut_and_the_rest_go_on() {
    let bus = TestBus::start_with(|c| {
        c.max_frame_len = 64 * 1024;
        c.memory_budget = 2 * MIB;
        c.slow_consumer_timeout = Duration::from_millis(300);
    })
    .await;
    let mut stalled = bus.registered("stalled").await; // never reads
    let mut tx = bus.raw().await;
    // 4 MiB for a receiver that reads nothing: far below its own outbox bounds
    // (32 MiB), twice the whole budget.
    let started = Instant::now();
    tx.send_bytes(&ten_kb_messages("stalled", 400)).await;
    // The sender gets through once the stalled receiver is cut; what it sent after
    // that finds no endpoint, and it is told so.
    for answer in tx.sync().await {
        assert_eq!(answer["code"], "endpoint_not_found", "{answer}");
    }
    let took = started.elapsed();
    let status = bus.status().await;
    assert_eq!(
        status["counters"]["slow_consumer_disconnects"], 1,
        "{status}"
    );
    assert!(status["memory"]["waits"].as_u64().unwrap() > 0, "{status}");
    assert!(took < WAIT, "held for {took:?}");
    let rest = stalled.until_eof().await;
    assert!(rest.len() < 400);
    let status = bus
        .wait_status("the budget given back", |s| {
            s["memory"]["used"].as_u64().unwrap() < 64
        })
        .await;
    assert_eq!(status["memory"]["budget"], 2 * MIB);
    bus.stop().await;
}

#[tokio::test]
async fn a_large_frame_waiting_for_room_gets_it_from_a_receiver_that_reads_nothing() {
    let bus = TestBus::start_with(|c| {
        c.max_frame_len = MIB;
        c.memory_budget = 2 * MIB + 4096;
        c.slow_consumer_timeout = Duration::from_millis(300);
    })
    .await;
    let mut stalled = bus.registered("stalled").await; // never reads
    let mut rx = bus.registered("rx").await;
    let mut tx = bus.raw().await;
    // About 1.5 MB queued for the stalled receiver (beyond what its socket
    // buffer takes): the budget is not spent, and its outbox is far below high
    // water.
    let small = json!({"type": "message", "to": "stalled", "body": "x".repeat(10_000)});
    let mut sent = 0;
    while bus.status().await["memory"]["used"].as_u64().unwrap() < 1_500_000 {
        for _ in 0..10 {
            tx.send(&small).await;
        }
        assert!(tx.sync().await.is_empty());
        sent += 10;
    }
    // An 800 KB frame does not fit beside it: it waits, and the receiver in its
    // way is cut.
    let big = json!({"type": "message", "to": "rx", "body": "y".repeat(800_000)});
    let mut big_tx = bus.raw().await;
    big_tx.send(&big).await;
    let got = rx.recv().await;
    assert_eq!(got["body"].as_str().unwrap().len(), 800_000);
    let status = bus.status().await;
    assert_eq!(
        status["counters"]["slow_consumer_disconnects"], 1,
        "{status}"
    );
    assert!(status["memory"]["waits"].as_u64().unwrap() > 0, "{status}");
    assert!(stalled.until_eof().await.len() < sent);
    bus.stop().await;
}

#[tokio::test]
async fn a_slow_reader_holding_more_than_its_share_is_cut_when_others_need_the_memory() {
    let bus = TestBus::start_with(|c| {
        c.max_frame_len = 512 * 1024;
        c.memory_budget = 2 * MIB;
        // Only the share rule can cut it within the test.
        c.slow_consumer_timeout = Duration::from_secs(60);
    })
    .await;
    let mut slow = bus.registered("slow").await;
    // It reads, one frame every 20 ms: it makes progress, slowly.
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while slow.try_recv().await.is_some() {
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n
    });
    let mut tx = bus.raw().await;
    // 4 MB for it: twice the whole budget, eight times its share.
    tx.send_bytes(&ten_kb_messages("slow", 400)).await;
    // Meanwhile a pair of other clients needs memory for 300 KB messages.
    let mut rx = bus.registered("rx").await;
    let receive = tokio::spawn(async move {
        for _ in 0..10 {
            assert_eq!(rx.recv().await["body"].as_str().unwrap().len(), 300_000);
        }
    });
    let mut big_tx = bus.raw().await;
    let big = json!({"type": "message", "to": "rx", "body": "y".repeat(300_000)});
    let started = Instant::now();
    for _ in 0..10 {
        big_tx.send(&big).await;
    }
    receive.await.unwrap();
    assert!(started.elapsed() < WAIT, "took {:?}", started.elapsed());
    let status = bus.status().await;
    assert_eq!(
        status["counters"]["slow_consumer_disconnects"], 1,
        "{status}"
    );
    let read = reader.await.unwrap();
    assert!(read < 400, "it read {read}");
    for answer in tx.sync().await {
        assert_eq!(answer["code"], "endpoint_not_found", "{answer}");
    }
    bus.stop().await;
}

#[tokio::test]
async fn clients_that_leave_without_reading_their_answers_leak_no_budget() {
    let bus = TestBus::start_with(|c| c.outbox_capacity = 64).await;
    let ping = hookbus::frame::encode(br#"{"type":"ping"}"#);
    let pings: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 20_000)
        .collect();
    for _ in 0..5 {
        let mut c = bus.raw().await;
        // The bus may close it first (it reads none of its pongs).
        let _ = tokio::io::AsyncWriteExt::write_all(&mut c.stream, &pings).await;
        drop(c);
    }
    bus.wait_status("every byte given back", |s| {
        s["connections"] == 1 && s["memory"]["used"].as_u64().unwrap() < 64
    })
    .await;
    bus.stop().await;
}

#[tokio::test]
async fn frames_waiting_in_the_budget_do_not_stop_small_requests_and_time_out_in_turn() {
    // Two clients each inside a frame of half the budget: the first gets room
    // (frames never take more than three quarters), the second waits for it, off
    // the clock. Small requests go on beside them.
    let bus = TestBus::start_with(|c| {
        c.max_frame_len = MIB;
        c.memory_budget = 2 * MIB + 8;
        c.frame_timeout = Duration::from_secs(3);
    })
    .await;
    let mut pressers = Vec::new();
    for _ in 0..2 {
        let mut c = bus.raw().await;
        c.send_bytes(&(MIB as u32).to_be_bytes()).await;
        c.send_bytes(b"{").await;
        pressers.push(c);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let mut healthy = bus.raw().await;
    assert!(healthy.sync().await.is_empty());
    // Answered before the first frame's timeout, not after it.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    for mut c in pressers {
        let rest = c.until_eof().await;
        assert_eq!(rest.last().unwrap()["code"], "frame_timeout", "{rest:?}");
    }
    let status = bus.status().await;
    assert!(status["memory"]["waits"].as_u64().unwrap() > 0, "{status}");
    bus.stop().await;
}

#[tokio::test]
async fn answers_to_requests_already_sent_are_bounded_like_messages() {
    let bus = TestBus::start_with(|c| {
        c.outbox_max_bytes = 4 * MIB;
        c.slow_consumer_timeout = Duration::from_secs(60);
    })
    .await;
    // 200 endpoints with long names: each `list_endpoints` answer is ~50 KB.
    let mut endpoints = Vec::new();
    for i in 0..200 {
        endpoints.push(bus.registered(&format!("{i:0>200}")).await);
    }
    // 2000 requests (100 MB of answers) sent at once, none read.
    let mut greedy = bus.raw().await;
    let ask = hookbus::frame::encode(br#"{"type":"list_endpoints"}"#);
    let asks: Vec<u8> = ask.iter().copied().cycle().take(ask.len() * 2000).collect();
    greedy.send_bytes(&asks).await;
    let mut most = 0;
    for _ in 0..20 {
        let used = bus.status().await["memory"]["used"].as_u64().unwrap() as usize;
        most = most.max(used);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // About its outbox's high water (2 MiB) and one answer, not 100 MB.
    assert!(most < 8 * MIB, "{most} bytes held for one client");
    // Its answers come as it reads them, all of them, in order.
    for _ in 0..2000 {
        assert_eq!(greedy.recv().await["type"], "endpoints_list");
    }
    bus.stop().await;
}
