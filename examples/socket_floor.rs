//! The machine's floor for latency, with no bus in between: one Unix socket hop
//! between two threads, and a round trip through a relay, the least any daemon
//! that sleeps while idle can do. Compare with `hookbus bench`.
//!
//!     cargo run --release --example socket_floor

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

const SAMPLES: usize = 10_000;

fn one_hop(poll: bool) -> (f64, f64) {
    let (mut tx, mut rx) = UnixStream::pair().expect("socketpair");
    rx.set_nonblocking(poll).expect("set_nonblocking");
    let (done_tx, done_rx) = std::sync::mpsc::channel::<u64>();
    let epoch = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 8];
        for _ in 0..SAMPLES {
            let mut got = 0;
            while got < 8 {
                match rx.read(&mut buf[got..]) {
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                    Err(e) => panic!("read: {e}"),
                }
            }
            let now = epoch.elapsed().as_nanos() as u64;
            done_tx.send(now - u64::from_le_bytes(buf)).expect("send");
        }
    });
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let sent = epoch.elapsed().as_nanos() as u64;
        tx.write_all(&sent.to_le_bytes()).expect("write");
        samples.push(done_rx.recv().expect("recv"));
    }
    reader.join().expect("reader");
    samples.sort_unstable();
    let pct = |p: f64| samples[((SAMPLES - 1) as f64 * p) as usize] as f64 / 1000.0;
    (pct(0.5), pct(0.99))
}

/// Reads exactly `buf.len()` bytes, yielding while the socket has none (as
/// `hookbus bench`'s polling clients do on a machine with no core to spare).
fn read_polling(stream: &mut UnixStream, buf: &mut [u8]) {
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) => panic!("closed"),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// A requester and a responder, both polling, exchange 100-byte frames through
/// a relay of two threads that sleep in `read` (one per direction): the shape of
/// `hookbus bench`'s request/reply run with nothing of the bus's work in it.
fn relay_round_trip() -> (f64, f64) {
    const FRAME: usize = 100;
    let (mut requester, mut relay_a) = UnixStream::pair().expect("socketpair");
    let (mut relay_b, mut responder) = UnixStream::pair().expect("socketpair");
    let (mut relay_a2, mut relay_b2) = (
        relay_a.try_clone().expect("clone"),
        relay_b.try_clone().expect("clone"),
    );
    let forward = |from: &mut UnixStream, to: &mut UnixStream| {
        let mut buf = [0u8; FRAME];
        while from.read_exact(&mut buf).is_ok() {
            if to.write_all(&buf).is_err() {
                return;
            }
        }
    };
    let there = std::thread::spawn(move || forward(&mut relay_a, &mut relay_b));
    let back = std::thread::spawn(move || forward(&mut relay_b2, &mut relay_a2));
    responder.set_nonblocking(true).expect("set_nonblocking");
    let answering = std::thread::spawn(move || {
        let mut buf = [0u8; FRAME];
        for _ in 0..SAMPLES {
            read_polling(&mut responder, &mut buf);
            responder.write_all(&buf).expect("write");
        }
    });
    requester.set_nonblocking(true).expect("set_nonblocking");
    let requesting = std::thread::spawn(move || {
        let mut samples = Vec::with_capacity(SAMPLES);
        let mut buf = [0u8; FRAME];
        for _ in 0..SAMPLES {
            let t = Instant::now();
            requester.write_all(&buf).expect("write");
            read_polling(&mut requester, &mut buf);
            samples.push(t.elapsed().as_nanos() as u64);
        }
        samples
    });
    let mut samples = requesting.join().expect("requester");
    answering.join().expect("responder");
    let _ = (there.join(), back.join());
    samples.sort_unstable();
    let pct = |p: f64| samples[((SAMPLES - 1) as f64 * p) as usize] as f64 / 1000.0;
    (pct(0.5), pct(0.99))
}

fn main() {
    for (poll, label) in [(false, "receiver sleeps in read"), (true, "receiver polls")] {
        let (p50, p99) = one_hop(poll);
        println!("one socket hop, {label}: p50 {p50:.1} µs, p99 {p99:.1} µs");
    }
    let (p50, p99) = relay_round_trip();
    println!(
        "round trip through a relay that sleeps in read, both ends polling: p50 {p50:.1} µs, p99 {p99:.1} µs"
    );
}
