//! `hookbus bench`'s durable-store scenarios (targets with a store; others
//! get failed rows). Write rows carry the target's `--sync` policy, read from
//! `status`:
//! - **kv put**: [`CLIENTS`] clients, each with up to [`WINDOW`] puts in flight,
//!   on their own keys; puts/s counts acknowledged (committed) puts. p50/p99:
//!   one put at a time, sent to acknowledged.
//! - **kv get**: the same clients reading those keys; gets/s, and one get at a
//!   time for p50/p99.
//! - **job cycle**: one producer publishes jobs ([`WINDOW`] in flight) while
//!   [`CLIENTS`] workers claim [`CLAIM_BATCH`] at a time and fulfil them;
//!   cycles/s counts fulfilled jobs. p50/p99: one publish, claim and fulfil
//!   after another, the whole cycle.
//! - **stream append**: `--messages` publishes on `bench.stream.x`, sent at
//!   once, timed until the target's stream [`BENCH_STREAM`] has them all (the
//!   target must declare it); **stream replay**: the same messages read back;
//!   **stream consume + ack**: the same messages through a new durable
//!   consumer, each acknowledged as it is read.

use std::io::{BufReader, BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};

use crate::bench::{connect, read_frame, write_frame, BenchOptions, Row, BENCH_IO_TIMEOUT};

/// Clients sending at once.
pub const CLIENTS: usize = 4;

/// Requests each client keeps in flight.
const WINDOW: usize = 256;

/// Keys each client writes, round robin.
const KEYS_PER_CLIENT: usize = 1000;

/// Claims a worker sends before it reads their answers.
const CLAIM_BATCH: usize = 64;

pub fn run(target: &Path, options: &BenchOptions, size: usize, mut row: impl FnMut(Row)) {
    let sync = sync_policy(target).unwrap_or_else(|_| "?".to_owned());
    let put_name = format!("kv put (sync {sync})");
    row(put(target, options, size, &put_name)
        .unwrap_or_else(|e| Row::failed(target, put_name.clone(), size, e)));
    row(get(target, options, size)
        .unwrap_or_else(|e| Row::failed(target, "kv get".to_owned(), size, e)));
    let cycle_name = format!("job cycle (sync {sync})");
    row(job_cycles(target, options, size, &cycle_name)
        .unwrap_or_else(|e| Row::failed(target, cycle_name.clone(), size, e)));
    match stream_rows(target, options, size, &sync) {
        Ok((append, replay, consume)) => {
            row(append);
            row(replay);
            row(consume);
        }
        Err(e) => row(Row::failed(
            target,
            format!("stream append (sync {sync})"),
            size,
            e,
        )),
    }
}

fn sync_policy(target: &Path) -> std::io::Result<String> {
    let mut s = connect(target)?;
    write_frame(&mut s, &json!({"type": "status"}))?;
    let mut buf = Vec::new();
    read_frame(&mut s, &mut buf)?;
    let status: Value = serde_json::from_slice(&buf).unwrap_or_default();
    Ok(status["store"]["sync"].as_str().unwrap_or("?").to_owned())
}

fn kv_client(target: &Path) -> std::io::Result<UnixStream> {
    store_client(target, "kv")
}

fn store_client(target: &Path, feature: &str) -> std::io::Result<UnixStream> {
    let mut stream = connect(target)?;
    write_frame(
        &mut stream,
        &json!({"type": "hello", "protocol": 2, "features": [feature]}),
    )?;
    let mut buf = Vec::new();
    read_frame(&mut stream, &mut buf)?;
    let welcome: Value = serde_json::from_slice(&buf).unwrap_or_default();
    if !welcome["features"]
        .as_array()
        .is_some_and(|f| f.contains(&json!(feature)))
    {
        return Err(std::io::Error::other(format!(
            "this bus has no `{feature}` feature"
        )));
    }
    stream.set_read_timeout(Some(BENCH_IO_TIMEOUT))?;
    Ok(stream)
}

/// Sends `total` requests built by `frame(i)` with up to [`WINDOW`] in flight
/// and checks each answer's `type` is `expect`.
fn pipelined(
    stream: UnixStream,
    total: usize,
    frame: impl Fn(usize) -> String,
    expect: &str,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = BufWriter::new(stream);
    let mut buf = Vec::new();
    let (mut sent, mut got) = (0, 0);
    while got < total {
        while sent < total && sent - got < WINDOW {
            let text = frame(sent);
            out.write_all(&(text.len() as u32).to_be_bytes())?;
            out.write_all(text.as_bytes())?;
            sent += 1;
        }
        out.flush()?;
        // Read half a window before sending more, so writes go out in batches.
        let until = (got + WINDOW / 2).min(sent);
        while got < until {
            read_frame(&mut reader, &mut buf)?;
            let answer: Value = serde_json::from_slice(&buf).unwrap_or_default();
            if answer["type"] != expect {
                return Err(std::io::Error::other(answer.to_string()));
            }
            got += 1;
        }
    }
    Ok(())
}

/// One request at a time: the round trip of each, in ns.
fn one_at_a_time(
    stream: UnixStream,
    samples: u64,
    frame: impl Fn(usize) -> String,
    expect: &str,
) -> std::io::Result<Vec<u64>> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = BufWriter::new(stream);
    let mut buf = Vec::new();
    let mut delays = Vec::with_capacity(samples as usize);
    for i in 0..samples as usize {
        let text = frame(i);
        let t = Instant::now();
        out.write_all(&(text.len() as u32).to_be_bytes())?;
        out.write_all(text.as_bytes())?;
        out.flush()?;
        read_frame(&mut reader, &mut buf)?;
        delays.push(t.elapsed().as_nanos() as u64);
        let answer: Value = serde_json::from_slice(&buf).unwrap_or_default();
        if answer["type"] != expect {
            return Err(std::io::Error::other(answer.to_string()));
        }
    }
    Ok(delays)
}

fn put_frame(client: usize, i: usize, pad: &str) -> String {
    format!(
        r#"{{"type":"kv_put","key":"bench.kv.c{client}.k{}","value":{{"pad":"{pad}"}}}}"#,
        i % KEYS_PER_CLIENT
    )
}

fn get_frame(client: usize, i: usize) -> String {
    format!(
        r#"{{"type":"kv_get","key":"bench.kv.c{client}.k{}"}}"#,
        i % KEYS_PER_CLIENT
    )
}

/// Runs `each(client, stream)` on every client at once; returns the seconds it took.
fn all_clients(
    target: &Path,
    each: impl Fn(usize, UnixStream) -> std::io::Result<()> + Sync,
) -> std::io::Result<f64> {
    let streams = (0..CLIENTS)
        .map(|_| kv_client(target))
        .collect::<std::io::Result<Vec<_>>>()?;
    let started = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(c, s)| {
                let each = &each;
                scope.spawn(move || each(c, s))
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("a client panicked")))
        })
    })?;
    Ok(started.elapsed().as_secs_f64())
}

fn put(target: &Path, options: &BenchOptions, size: usize, name: &str) -> std::io::Result<Row> {
    let pad = "x".repeat(size.saturating_sub(r#"{"pad":""}"#.len()));
    let per_client = (options.messages as usize / 10 / CLIENTS).max(KEYS_PER_CLIENT);
    let secs = all_clients(target, |c, s| {
        pipelined(s, per_client, |i| put_frame(c, i, &pad), "kv_stored")
    })?;
    let rate = (per_client * CLIENTS) as f64 / secs;
    let samples = (options.latency_samples / 5).max(100);
    let mut delays = one_at_a_time(
        kv_client(target)?,
        samples,
        |i| put_frame(0, i, &pad),
        "kv_stored",
    )?;
    Ok(Row::measured(
        target,
        name.to_owned(),
        size,
        (rate, rate),
        &mut delays,
    ))
}

fn get(target: &Path, options: &BenchOptions, size: usize) -> std::io::Result<Row> {
    let per_client = options.messages as usize / CLIENTS;
    let secs = all_clients(target, |c, s| {
        pipelined(s, per_client, |i| get_frame(c, i), "kv_value")
    })?;
    let rate = (per_client * CLIENTS) as f64 / secs;
    let mut delays = one_at_a_time(
        kv_client(target)?,
        options.latency_samples,
        |i| get_frame(0, i),
        "kv_value",
    )?;
    Ok(Row::measured(
        target,
        "kv get".to_owned(),
        size,
        (rate, rate),
        &mut delays,
    ))
}

fn send_text(out: &mut impl Write, text: &str) -> std::io::Result<()> {
    out.write_all(&(text.len() as u32).to_be_bytes())?;
    out.write_all(text.as_bytes())
}

fn read_answer(reader: &mut impl std::io::Read, buf: &mut Vec<u8>) -> std::io::Result<Value> {
    read_frame(reader, buf)?;
    let answer: Value = serde_json::from_slice(buf).unwrap_or_default();
    if answer["type"] == "error" {
        return Err(std::io::Error::other(answer.to_string()));
    }
    Ok(answer)
}

/// Claims up to [`CLAIM_BATCH`] jobs and fulfils each, until `done` reaches
/// `total` (shared by the workers).
fn worker(
    stream: UnixStream,
    total: usize,
    done: &std::sync::atomic::AtomicUsize,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = BufWriter::new(stream);
    let mut buf = Vec::new();
    while done.load(Ordering::Relaxed) < total {
        for _ in 0..CLAIM_BATCH {
            send_text(
                &mut out,
                r#"{"type":"job_claim","goal":"bench.job","lease_ms":60000,"wait_ms":200}"#,
            )?;
        }
        out.flush()?;
        let mut leased = Vec::with_capacity(CLAIM_BATCH);
        for _ in 0..CLAIM_BATCH {
            let job = read_answer(&mut reader, &mut buf)?;
            if job["type"] == "job" {
                leased.push(format!(
                    r#"{{"type":"job_fulfill","job":{},"lease":{}}}"#,
                    job["job"], job["lease"]
                ));
            }
        }
        for fulfil in &leased {
            send_text(&mut out, fulfil)?;
        }
        out.flush()?;
        for _ in &leased {
            read_answer(&mut reader, &mut buf)?;
        }
        done.fetch_add(leased.len(), Ordering::Relaxed);
    }
    Ok(())
}

fn job_cycles(
    target: &Path,
    options: &BenchOptions,
    size: usize,
    name: &str,
) -> std::io::Result<Row> {
    let pad = "x".repeat(size.saturating_sub(r#"{"pad":""}"#.len()));
    let publish =
        format!(r#"{{"type":"job_publish","goal":"bench.job","payload":{{"pad":"{pad}"}}}}"#);
    let total = (options.messages as usize / 20).max(CLAIM_BATCH * CLIENTS);
    let producer = store_client(target, "jobs")?;
    let workers = (0..CLIENTS)
        .map(|_| store_client(target, "jobs"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let done = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| -> std::io::Result<()> {
        let handles: Vec<_> = workers
            .into_iter()
            .map(|w| {
                let done = &done;
                scope.spawn(move || worker(w, total, done))
            })
            .collect();
        pipelined(producer, total, |_| publish.clone(), "job_published")?;
        for h in handles {
            h.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("a worker panicked")))?;
        }
        Ok(())
    })?;
    let cycles = done.load(std::sync::atomic::Ordering::Relaxed);
    let rate = cycles as f64 / started.elapsed().as_secs_f64();
    // One cycle at a time: publish, claim, fulfil.
    let stream = store_client(target, "jobs")?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = BufWriter::new(stream);
    let mut buf = Vec::new();
    let samples = (options.latency_samples / 10).max(50);
    let mut delays = Vec::with_capacity(samples as usize);
    for _ in 0..samples {
        let t = Instant::now();
        send_text(&mut out, &publish)?;
        out.flush()?;
        read_answer(&mut reader, &mut buf)?;
        send_text(
            &mut out,
            r#"{"type":"job_claim","goal":"bench.job","lease_ms":60000}"#,
        )?;
        out.flush()?;
        let job = read_answer(&mut reader, &mut buf)?;
        let fulfil = format!(
            r#"{{"type":"job_fulfill","job":{},"lease":{}}}"#,
            job["job"], job["lease"]
        );
        send_text(&mut out, &fulfil)?;
        out.flush()?;
        read_answer(&mut reader, &mut buf)?;
        delays.push(t.elapsed().as_nanos() as u64);
    }
    Ok(Row::measured(
        target,
        name.to_owned(),
        size,
        (rate, rate),
        &mut delays,
    ))
}

/// The stream the stream scenarios need in the target's streams file.
pub const BENCH_STREAM: &str = "bench";

fn stream_last_seq(c: &mut UnixStream, buf: &mut Vec<u8>) -> std::io::Result<u64> {
    write_frame(c, &json!({"type": "stream_info", "stream": BENCH_STREAM}))?;
    let info = read_answer(c, buf)?;
    Ok(info["last_seq"].as_u64().unwrap_or(0))
}

/// Appends: publishes on `bench.stream.x` (no answers), counted once the
/// stream's last seq shows them all stored. Replay: the same messages read back.
fn stream_rows(
    target: &Path,
    options: &BenchOptions,
    size: usize,
    sync: &str,
) -> std::io::Result<(Row, Row, Row)> {
    let mut info = store_client(target, "streams")?;
    let mut buf = Vec::new();
    write_frame(
        &mut info,
        &json!({"type": "stream_info", "stream": BENCH_STREAM}),
    )?;
    read_frame(&mut info, &mut buf)?;
    let found: Value = serde_json::from_slice(&buf).unwrap_or_default();
    if found["type"] != "stream_info" {
        return Err(std::io::Error::other(format!(
            "declare a stream `{BENCH_STREAM}` on `bench.stream.>` in the target's --streams file to measure streams"
        )));
    }
    let start = found["last_seq"].as_u64().unwrap_or(0);
    let total = options.messages;
    let pad = "x".repeat(size.saturating_sub(r#"{"pad":""}"#.len()));
    let text =
        format!(r#"{{"type":"publish","subject":"bench.stream.x","body":{{"pad":"{pad}"}}}}"#);
    let publisher = store_client(target, "topics")?;
    let mut out = BufWriter::with_capacity(64 * 1024, publisher);
    let started = Instant::now();
    for _ in 0..total {
        send_text(&mut out, &text)?;
    }
    out.flush()?;
    while stream_last_seq(&mut info, &mut buf)? < start + total {
        std::thread::sleep(std::time::Duration::from_millis(1));
        if started.elapsed() > BENCH_IO_TIMEOUT * 6 {
            return Err(std::io::Error::other(
                "the stream did not keep every publish (see stream_drops in status)",
            ));
        }
    }
    let appends = total as f64 / started.elapsed().as_secs_f64();
    let append = Row::measured(
        target,
        format!("stream append (sync {sync})"),
        size,
        (appends, appends),
        &mut [],
    );
    // Read back what was just appended.
    let replayer = store_client(target, "streams")?;
    let mut reader = BufReader::with_capacity(256 * 1024, replayer.try_clone()?);
    let mut w = replayer;
    let started = Instant::now();
    write_frame(
        &mut w,
        &json!({"type": "replay", "stream": BENCH_STREAM, "from": {"seq": start + 1}}),
    )?;
    let mut events = 0u64;
    loop {
        read_frame(&mut reader, &mut buf)?;
        match serde_json::from_slice::<Value>(&buf).unwrap_or_default()["type"].as_str() {
            Some("stream_event") => events += 1,
            Some("replay_end") => break,
            Some("replaying") => {}
            _ => {
                return Err(std::io::Error::other(
                    String::from_utf8_lossy(&buf).into_owned(),
                ))
            }
        }
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    let replay = Row::measured(
        target,
        "stream replay".to_owned(),
        size,
        (rate, rate),
        &mut [],
    );
    let consume = consume_and_ack(target, start, total)?;
    let consume = Row::measured(
        target,
        format!("stream consume + ack (sync {sync})"),
        size,
        (consume, consume),
        &mut [],
    );
    Ok((append, replay, consume))
}

/// A durable consumer of the same messages, each acknowledged as it is read
/// (acks written by a second thread, as they come): messages per second.
fn consume_and_ack(target: &Path, start: u64, total: u64) -> std::io::Result<f64> {
    let consumer = store_client(target, "streams")?;
    let mut reader = BufReader::with_capacity(256 * 1024, consumer.try_clone()?);
    let durable = format!("bench-{}", std::process::id());
    let (seqs, acks) = std::sync::mpsc::channel::<u64>();
    let mut out = BufWriter::new(consumer.try_clone()?);
    let name = durable.clone();
    let acker = std::thread::spawn(move || -> std::io::Result<()> {
        let ack = |seq: u64| {
            format!(
                r#"{{"type":"stream_ack","stream":"{BENCH_STREAM}","durable":"{name}","seq":{seq}}}"#
            )
        };
        while let Ok(seq) = acks.recv() {
            send_text(&mut out, &ack(seq))?;
            // Written in one go while more wait.
            while let Ok(next) = acks.try_recv() {
                send_text(&mut out, &ack(next))?;
            }
            out.flush()?;
        }
        Ok(())
    });
    let mut w = consumer;
    let started = Instant::now();
    write_frame(
        &mut w,
        &json!({"type": "consume", "stream": BENCH_STREAM, "durable": durable,
                "from": {"seq": start + 1}, "max_ack_pending": 10000}),
    )?;
    let mut buf = Vec::new();
    let mut events = 0u64;
    while events < total {
        read_frame(&mut reader, &mut buf)?;
        let frame: Value = serde_json::from_slice(&buf).unwrap_or_default();
        match frame["type"].as_str() {
            Some("stream_event") => {
                events += 1;
                let _ = seqs.send(frame["seq"].as_u64().unwrap_or_default());
            }
            Some("consuming" | "stream_acked") => {}
            _ => {
                return Err(std::io::Error::other(
                    String::from_utf8_lossy(&buf).into_owned(),
                ))
            }
        }
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    drop(seqs);
    acker
        .join()
        .map_err(|_| std::io::Error::other("the ack thread failed"))??;
    write_frame(
        &mut w,
        &json!({"type": "unconsume", "stream": BENCH_STREAM, "durable": durable}),
    )?;
    write_frame(
        &mut w,
        &json!({"type": "consumer_delete", "stream": BENCH_STREAM, "durable": durable}),
    )?;
    Ok(rate)
}
