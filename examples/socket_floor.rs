//! The machine's floor for one-way latency: one Unix socket hop between two
//! threads, with no bus in between. Compare with `hookbus bench`.
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

fn main() {
    for (poll, label) in [(false, "receiver sleeps in read"), (true, "receiver polls")] {
        let (p50, p99) = one_hop(poll);
        println!("one socket hop, {label}: p50 {p50:.1} µs, p99 {p99:.1} µs");
    }
}
