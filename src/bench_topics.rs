//! `hookbus bench`'s protocol-2 scenarios (hookbus targets only; a target that
//! does not speak protocol 2 gets failed rows):
//! - **publish 1→1**: one publisher, one subscriber; the same throughput and
//!   latency runs as the endpoint 1→1 scenario, to compare with it.
//! - **publish 1→N wildcard**: N subscribers on `bench.*`; deliveries/s.
//! - **publish 1→1, 100k subscriptions**: as publish 1→1 with 100,000 other
//!   subscriptions (half with wildcards) in the table.
//! - **request/reply**: one requester, one responder; round trips/s with up to
//!   512 requests in flight, and the round trip's p50/p99 one at a time.
//! - **request, no responders**: one at a time, the time until `no_responders`.
//!
//! [`match_cost`] also times the subscription table alone, in process.

use std::io::{BufReader, BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bench::{
    connect, percentiles, read_frame, timed_run, write_frame, BenchOptions, Receivers, Row, Sender,
    Spin, BENCH_IO_TIMEOUT,
};

/// Subscribers of the wildcard fan-out scenario.
pub const FANOUT_SUBSCRIBERS: usize = 100;

/// Other subscriptions in the table for the big-table scenario.
pub const TABLE_SUBSCRIPTIONS: usize = 100_000;

/// Requests in flight in the request/reply throughput run (the bus allows
/// 1024 per connection).
const RR_WINDOW: u64 = 512;

/// Every protocol-2 scenario for one target and body size.
pub fn run(target: &Path, options: &BenchOptions, size: usize, mut row: impl FnMut(Row)) {
    let failed = |name: &str, e| Row::failed(target, name.to_owned(), size, e);
    row(pubsub(
        target,
        options,
        size,
        1,
        options.messages,
        "publish 1→1",
        false,
    )
    .unwrap_or_else(|e| failed("publish 1→1", e)));
    let name = format!("publish 1→{FANOUT_SUBSCRIBERS} wildcard");
    row(pubsub(
        target,
        options,
        size,
        FANOUT_SUBSCRIBERS,
        options.messages / 10,
        &name,
        false,
    )
    .unwrap_or_else(|e| failed(&name, e)));
    row(request_reply(target, options, size).unwrap_or_else(|e| failed("request/reply", e)));
    row(no_responders(target, options, size)
        .unwrap_or_else(|e| failed("request, no responders", e)));
    let name = "publish 1→1, 100k subscriptions";
    row(
        pubsub(target, options, size, 1, options.messages, name, true)
            .unwrap_or_else(|e| failed(name, e)),
    );
}

/// A connection that said `hello` with `features`.
fn speaker(target: &Path, features: &[&str]) -> std::io::Result<UnixStream> {
    let mut stream = connect(target)?;
    stream.set_read_timeout(Some(BENCH_IO_TIMEOUT))?;
    write_frame(
        &mut stream,
        &json!({"type": "hello", "protocol": 2, "features": features}),
    )?;
    let mut buf = Vec::new();
    read_frame(&mut stream, &mut buf)?;
    let welcome: Value = serde_json::from_slice(&buf).unwrap_or_default();
    if welcome["protocol"].as_u64() < Some(2) {
        return Err(std::io::Error::other("this bus does not speak protocol 2"));
    }
    stream.set_read_timeout(None)?;
    Ok(stream)
}

/// Sends `patterns` as subscriptions on `stream`, a thousand at a time.
fn subscribe_all(stream: &mut UnixStream, patterns: &[String]) -> std::io::Result<()> {
    let mut buf = Vec::new();
    for chunk in patterns.chunks(1000) {
        let mut out = BufWriter::new(&mut *stream);
        for p in chunk {
            write_frame(&mut out, &json!({"type": "subscribe", "subject": p}))?;
        }
        out.flush()?;
        drop(out);
        for _ in chunk {
            read_frame(stream, &mut buf)?;
            let answer: Value = serde_json::from_slice(&buf).unwrap_or_default();
            if answer["type"] != "subscribed" {
                return Err(std::io::Error::other(answer.to_string()));
            }
        }
    }
    Ok(())
}

fn pubsub(
    target: &Path,
    options: &BenchOptions,
    size: usize,
    subscribers: usize,
    messages: u64,
    name: &str,
    big_table: bool,
) -> std::io::Result<Row> {
    let pattern = if subscribers > 1 {
        "bench.*"
    } else {
        "bench.x"
    };
    // Kept open for the whole scenario: their subscriptions fill the table.
    let mut fillers = Vec::new();
    if big_table {
        for f in 0..4 {
            let mut s = speaker(target, &["topics"])?;
            let patterns: Vec<String> = (0..TABLE_SUBSCRIPTIONS / 4)
                .map(|i| match i % 2 {
                    0 => format!("fill.{f}.{i}.x"),
                    _ => format!("fill.{f}.{i}.*"),
                })
                .collect();
            subscribe_all(&mut s, &patterns)?;
            fillers.push(s);
        }
    }
    let subscribe = |n: usize| -> std::io::Result<Vec<UnixStream>> {
        (0..n)
            .map(|_| {
                let mut s = speaker(target, &["topics"])?;
                subscribe_all(&mut s, &[pattern.to_owned()])?;
                Ok(s)
            })
            .collect()
    };
    let publisher = || {
        Sender::on(
            speaker(target, &["topics"])?,
            r#"{"type":"publish","subject":"bench.x","ts":1.0,"body":{"t":"#.to_owned(),
            size,
        )
    };
    let epoch = Instant::now();
    let rx = Receivers::on(subscribe(subscribers)?, epoch, false, false)?;
    let mut sender = publisher()?;
    let started = Instant::now();
    for n in 0..messages {
        while n - rx.min_received() >= options.window {
            sender.flush()?;
            rx.wait_progress(Duration::from_micros(50))?;
        }
        sender.send(n, epoch)?;
    }
    sender.flush()?;
    rx.wait_for(messages)?;
    let elapsed = started.elapsed().as_secs_f64();
    rx.stop();
    let rx = Receivers::on(subscribe(subscribers)?, epoch, true, options.poll)?;
    let (mut samples, _) = timed_run(rx, options, &mut sender, epoch)?;
    drop(fillers);
    let rates = (
        messages as f64 / elapsed,
        (messages * subscribers as u64) as f64 / elapsed,
    );
    Ok(Row::measured(
        target,
        name.to_owned(),
        size,
        rates,
        &mut samples,
    ))
}

/// The `reply_to` of a request frame, read without parsing it.
fn reply_to(frame: &[u8]) -> Option<&[u8]> {
    let key = br#""reply_to":""#;
    let start = frame.windows(key.len()).position(|w| w == key)? + key.len();
    let len = frame[start..].iter().position(|&b| b == b'"')?;
    Some(&frame[start..start + len])
}

fn request_reply(target: &Path, options: &BenchOptions, size: usize) -> std::io::Result<Row> {
    let mut responder = speaker(target, &["topics", "rpc"])?;
    subscribe_all(&mut responder, &["bench.rr".to_owned()])?;
    // Like the latency runs' receivers, both ends poll their socket (yielding to
    // each other on a small machine), so the round trip is the bus's, not two
    // wake-ups of the generator's threads.
    let poll = options.poll;
    let answering = std::thread::spawn(move || -> std::io::Result<()> {
        responder.set_nonblocking(poll)?;
        let mut reader = BufReader::with_capacity(64 * 1024, Spin(responder.try_clone()?, false));
        let mut out = BufWriter::with_capacity(64 * 1024, Spin(responder, false));
        let mut buf = Vec::new();
        loop {
            if read_frame(&mut reader, &mut buf).is_err() {
                return Ok(()); // the scenario is over
            }
            let Some(to) = reply_to(&buf) else { continue };
            let reply = format!(
                r#"{{"type":"reply","reply_to":"{}","body":0}}"#,
                String::from_utf8_lossy(to)
            );
            out.write_all(&(reply.len() as u32).to_be_bytes())?;
            out.write_all(reply.as_bytes())?;
            if reader.buffer().is_empty() {
                out.flush()?;
            }
        }
    });
    let requester = speaker(target, &["rpc"])?;
    requester.set_read_timeout(Some(BENCH_IO_TIMEOUT))?;
    let pad = "x".repeat(size.saturating_sub(r#"{"pad":""}"#.len()));
    let request = |rid: u64| -> Vec<u8> {
        let text = format!(
            r#"{{"type":"request","rid":{rid},"subject":"bench.rr","timeout_ms":10000,"body":{{"pad":"{pad}"}}}}"#
        );
        let mut frame = (text.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(text.as_bytes());
        frame
    };
    let mut reader = BufReader::with_capacity(64 * 1024, Spin(requester.try_clone()?, false));
    requester.set_nonblocking(options.poll)?;
    let mut out = BufWriter::with_capacity(64 * 1024, Spin(requester.try_clone()?, false));
    let mut buf = Vec::new();
    let expect_response = |buf: &[u8]| {
        if buf.starts_with(br#"{"type":"response""#) {
            Ok(())
        } else {
            Err(std::io::Error::other(
                String::from_utf8_lossy(buf).into_owned(),
            ))
        }
    };

    // Throughput: up to RR_WINDOW requests in flight.
    let total = (options.messages / 4).max(1);
    let (mut sent, mut answered) = (0u64, 0u64);
    let started = Instant::now();
    while answered < total {
        while sent < total && sent - answered < RR_WINDOW {
            out.write_all(&request(sent))?;
            sent += 1;
        }
        out.flush()?;
        read_frame(&mut reader, &mut buf)?;
        expect_response(&buf)?;
        answered += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();

    // Latency: one round trip at a time.
    let mut samples = Vec::with_capacity(options.latency_samples as usize);
    for n in 0..options.latency_samples {
        let frame = request(total + n);
        let t = Instant::now();
        out.write_all(&frame)?;
        out.flush()?;
        read_frame(&mut reader, &mut buf)?;
        samples.push(t.elapsed().as_nanos() as u64);
        expect_response(&buf)?;
    }
    let _ = requester.shutdown(std::net::Shutdown::Both);
    drop((reader, out, requester));
    // The responder sees its connection end only when the bus drops it: it is
    // not waited for.
    drop(answering);
    let rate = total as f64 / elapsed;
    Ok(Row::measured(
        target,
        "request/reply".to_owned(),
        size,
        (rate, rate),
        &mut samples,
    ))
}

/// Requests nobody serves, one at a time: how soon `no_responders` comes back
/// (p50/p99 of the round trip; msg/s is the rate of that loop).
fn no_responders(target: &Path, options: &BenchOptions, size: usize) -> std::io::Result<Row> {
    let requester = speaker(target, &["rpc"])?;
    requester.set_read_timeout(Some(BENCH_IO_TIMEOUT))?;
    // Polling, as in the request/reply run: the time is the bus's answer, not
    // the generator's wake-up.
    requester.set_nonblocking(options.poll)?;
    let mut reader = BufReader::new(Spin(requester.try_clone()?, false));
    let mut out = BufWriter::new(Spin(requester, false));
    let pad = "x".repeat(size.saturating_sub(r#"{"pad":""}"#.len()));
    let mut buf = Vec::new();
    let mut samples = Vec::with_capacity(options.latency_samples as usize);
    let started = Instant::now();
    for rid in 0..options.latency_samples {
        let text = format!(
            r#"{{"type":"request","rid":{rid},"subject":"bench.nobody","timeout_ms":60000,"body":{{"pad":"{pad}"}}}}"#
        );
        let t = Instant::now();
        out.write_all(&(text.len() as u32).to_be_bytes())?;
        out.write_all(text.as_bytes())?;
        out.flush()?;
        read_frame(&mut reader, &mut buf)?;
        samples.push(t.elapsed().as_nanos() as u64);
        let answer: Value = serde_json::from_slice(&buf).unwrap_or_default();
        if answer["code"] != "no_responders" {
            return Err(std::io::Error::other(answer.to_string()));
        }
    }
    let rate = options.latency_samples as f64 / started.elapsed().as_secs_f64();
    Ok(Row::measured(
        target,
        "request, no responders".to_owned(),
        size,
        (rate, rate),
        &mut samples,
    ))
}

/// Times the subscription table alone: `subscriptions` patterns (half with
/// wildcards), then publishes on subjects that match one of them. Returns the
/// p50 and p99 of one match, in ns, and how many patterns were in the table.
pub fn match_cost(subscriptions: usize) -> (f64, f64, usize) {
    use hookbus::router::{Sub, Subscriptions};
    let mut table = Subscriptions::default();
    for i in 0..subscriptions {
        let pattern = match i % 2 {
            0 => format!("fill.{i}.x"),
            _ => format!("fill.{i}.*"),
        };
        table.insert(&pattern, Sub::new(i as u64, 1));
    }
    let mut out = Vec::new();
    let mut samples = Vec::with_capacity(100_000);
    for n in 0..100_000usize {
        let subject = format!("fill.{}.x", (n * 7919) % subscriptions.max(1));
        let t = Instant::now();
        table.matching(&subject, &mut out);
        samples.push(t.elapsed().as_nanos() as u64);
        std::hint::black_box(out.len());
    }
    let (p50, p99) = percentiles(&mut samples);
    // `percentiles` reports µs from ns: back to ns.
    (p50 * 1000.0, p99 * 1000.0, table.len())
}
