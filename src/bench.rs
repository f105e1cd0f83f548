//! `hookbus bench`: a load generator that speaks the hermes-bus protocol, so it can
//! be aimed at hookbus or at any hermes-protocol socket and compare them in one run.
//!
//! Each client is a plain thread with a blocking socket, so the generator adds as
//! little overhead as possible. Two measurements per scenario:
//! - **throughput**: one anonymous sender streams messages to 1 receiver (1→1) or
//!   as broadcasts to N receivers (1→N), keeping at most `window` messages in
//!   flight so no server's queue overflows; rate = messages / elapsed.
//! - **latency**: one message at a time; one-way latency is the time from the
//!   sender's write to each receiver's read (same process, same clock).
//!
//! Two more scenarios attack the bus's flow control, per body size:
//! - **burst**: `burst` messages to one reading receiver in a single `write`;
//!   rate = messages / time until the last arrives, p50/p99 = each message's delay
//!   from the start of the write. A bus that cuts the receiver fails the run.
//! - **beside a stalled receiver**: one client streams to an endpoint that never
//!   reads while the latency run goes on between two others; p50/p99 are the
//!   healthy receiver's.

use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use hookbus::frame;

/// How long a bench client waits on the server before calling the run failed.
pub const BENCH_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Sockets to measure, one after another, with the same scenarios.
    pub targets: Vec<PathBuf>,
    /// Body sizes in bytes (the JSON `body` object is padded to this size).
    pub sizes: Vec<usize>,
    /// Receivers for the broadcast scenario; 0 skips it.
    pub fanout: usize,
    /// Messages sent per throughput run.
    pub messages: u64,
    /// Messages sent one at a time per latency run.
    pub latency_samples: u64,
    /// Most messages in flight during throughput runs.
    pub window: u64,
    /// Idle registered connections opened to measure the first target's memory
    /// (it must be hookbus, which reports its pid); 0 skips it.
    pub idle_connections: usize,
    /// Latency receivers poll their socket instead of sleeping in `read`, so the
    /// generator's own wake-up time is not counted as the bus's latency.
    pub poll: bool,
    /// Messages in the burst scenario's single write; 0 skips it.
    pub burst: u64,
    /// Run the latency scenario beside a receiver that never reads.
    pub stalled: bool,
    /// Run the protocol-2 scenarios ([`crate::bench_topics`]).
    pub topics: bool,
    /// Run the KV scenarios ([`crate::bench_store`]).
    pub kv: bool,
}

/// One scenario's result.
#[derive(Debug, Clone)]
pub struct Row {
    pub target: PathBuf,
    pub scenario: String,
    pub size: usize,
    /// Messages sent per second.
    pub msgs_per_sec: f64,
    /// Messages received per second, summed over receivers.
    pub deliveries_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Why the scenario failed against this target (the other fields are then 0).
    pub failed: Option<String>,
}

impl Row {
    /// A scenario's row: rates, and the percentiles of its delays (ns).
    pub(crate) fn measured(
        target: &Path,
        scenario: String,
        size: usize,
        (msgs_per_sec, deliveries_per_sec): (f64, f64),
        delays: &mut [u64],
    ) -> Self {
        let (p50_us, p99_us) = percentiles(delays);
        Self {
            target: target.to_owned(),
            scenario,
            size,
            msgs_per_sec,
            deliveries_per_sec,
            p50_us,
            p99_us,
            failed: None,
        }
    }

    pub(crate) fn failed(
        target: &Path,
        scenario: String,
        size: usize,
        error: std::io::Error,
    ) -> Self {
        Self {
            target: target.to_owned(),
            scenario,
            size,
            msgs_per_sec: 0.0,
            deliveries_per_sec: 0.0,
            p50_us: 0.0,
            p99_us: 0.0,
            failed: Some(error.to_string()),
        }
    }
}

/// Memory of a server before and after opening idle connections.
#[derive(Debug, Clone)]
pub struct Memory {
    pub target: PathBuf,
    pub pid: i64,
    pub idle_rss_kib: u64,
    pub connections: usize,
    pub loaded_rss_kib: u64,
}

impl Memory {
    pub fn per_connection_bytes(&self) -> f64 {
        (self.loaded_rss_kib.saturating_sub(self.idle_rss_kib) * 1024) as f64
            / self.connections.max(1) as f64
    }
}

/// Runs every scenario against every target.
pub fn run(
    options: &BenchOptions,
    mut progress: impl FnMut(&Row),
) -> std::io::Result<(Vec<Row>, Vec<Memory>)> {
    raise_fd_limit();
    let mut rows = Vec::new();
    let mut memory = Vec::new();
    for (i, target) in options.targets.iter().enumerate() {
        // Memory needs the pid from hookbus's `status`, so only the first target.
        if i == 0 && options.idle_connections > 0 {
            memory.push(measure_memory(target, options.idle_connections)?);
        }
        for &size in &options.sizes {
            let mut scenarios = vec![1];
            if options.fanout > 0 {
                scenarios.push(options.fanout);
            }
            // A bus that cannot take a scenario fails that scenario, not the run.
            for receivers in scenarios {
                let row = scenario(target, options, size, receivers)
                    .unwrap_or_else(|e| Row::failed(target, scenario_name(receivers), size, e));
                progress(&row);
                rows.push(row);
            }
            if options.burst > 0 {
                let row = burst(target, options, size)
                    .unwrap_or_else(|e| Row::failed(target, burst_name(options), size, e));
                progress(&row);
                rows.push(row);
            }
            if options.stalled {
                let row = beside_stalled(target, options, size)
                    .unwrap_or_else(|e| Row::failed(target, STALLED.to_owned(), size, e));
                progress(&row);
                rows.push(row);
            }
            if options.topics {
                crate::bench_topics::run(target, options, size, |row| {
                    progress(&row);
                    rows.push(row);
                });
            }
            if options.kv {
                crate::bench_store::run(target, options, size, |row| {
                    progress(&row);
                    rows.push(row);
                });
            }
        }
    }
    Ok((rows, memory))
}

fn scenario(
    target: &Path,
    options: &BenchOptions,
    size: usize,
    receivers: usize,
) -> std::io::Result<Row> {
    let broadcast = receivers > 1;
    let names: Vec<String> = (0..receivers)
        .map(|i| format!("bench-rx-{}-{i}", std::process::id()))
        .collect();
    let to = if broadcast {
        String::new()
    } else {
        names[0].clone()
    };
    let epoch = Instant::now();

    // Throughput.
    let rx = Receivers::start(target, &names, epoch, false, false)?;
    let mut sender = Sender::connect(target, &to, size)?;
    let started = Instant::now();
    for n in 0..options.messages {
        while n - rx.min_received() >= options.window {
            sender.flush()?;
            rx.wait_progress(Duration::from_micros(50))?;
        }
        sender.send(n, epoch)?;
    }
    sender.flush()?;
    rx.wait_for(options.messages)?;
    let elapsed = started.elapsed().as_secs_f64();
    rx.stop();

    let (mut samples, _) = latency(target, options, &names, &mut sender, epoch)?;
    let rates = (
        options.messages as f64 / elapsed,
        (options.messages * receivers as u64) as f64 / elapsed,
    );
    Ok(Row::measured(
        target,
        scenario_name(receivers),
        size,
        rates,
        &mut samples,
    ))
}

/// Sends `latency_samples` messages one at a time to the receivers `names`;
/// returns every one-way delay (ns) and the run's length.
fn latency(
    target: &Path,
    options: &BenchOptions,
    names: &[String],
    sender: &mut Sender,
    epoch: Instant,
) -> std::io::Result<(Vec<u64>, Duration)> {
    let rx = Receivers::start(target, names, epoch, true, options.poll)?;
    timed_run(rx, options, sender, epoch)
}

/// Sends `latency_samples` messages one at a time to receivers already
/// listening (timed); returns every one-way delay (ns) and the run's length.
pub(crate) fn timed_run(
    rx: Receivers,
    options: &BenchOptions,
    sender: &mut Sender,
    epoch: Instant,
) -> std::io::Result<(Vec<u64>, Duration)> {
    let mut samples = Vec::with_capacity((options.latency_samples as usize) * rx.counts.len());
    let started = Instant::now();
    for n in 0..options.latency_samples {
        sender.send(n, epoch)?;
        sender.flush()?;
        rx.wait_for(n + 1)?;
    }
    let took = started.elapsed();
    for r in rx.stop() {
        samples.extend(r);
    }
    Ok((samples, took))
}

/// p50 and p99 of delays in ns, in µs.
pub(crate) fn percentiles(samples: &mut [u64]) -> (f64, f64) {
    samples.sort_unstable();
    let pct = |p: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[i] as f64 / 1000.0
    };
    (pct(0.50), pct(0.99))
}

fn endpoint_name(role: &str) -> String {
    format!("bench-{role}-{}", std::process::id())
}

fn scenario_name(receivers: usize) -> String {
    if receivers > 1 {
        format!("1→{receivers} broadcast")
    } else {
        "1→1".to_owned()
    }
}

fn burst_name(options: &BenchOptions) -> String {
    format!("burst of {} in one write", options.burst)
}

const STALLED: &str = "1→1 beside a stalled receiver";

/// `options.burst` messages to one reading receiver, in one `write`.
fn burst(target: &Path, options: &BenchOptions, size: usize) -> std::io::Result<Row> {
    let names = [endpoint_name("burst")];
    let epoch = Instant::now();
    let rx = Receivers::start(target, &names, epoch, true, false)?;
    let mut sender = Sender::connect(target, &names[0], size)?;
    // Every message carries the time the write starts.
    let mut bytes = Vec::new();
    let t = epoch.elapsed().as_nanos() as u64;
    for n in 0..options.burst {
        sender.encode_at(n, t, &mut bytes);
    }
    let started = Instant::now();
    sender.out.get_mut().write_all(&bytes)?;
    drop(bytes);
    rx.wait_for(options.burst)?;
    let elapsed = started.elapsed().as_secs_f64();
    let mut samples: Vec<u64> = rx.stop().into_iter().flatten().collect();
    let rate = options.burst as f64 / elapsed;
    Ok(Row::measured(
        target,
        burst_name(options),
        size,
        (rate, rate),
        &mut samples,
    ))
}

/// The latency run, while another client streams to an endpoint that never reads.
fn beside_stalled(target: &Path, options: &BenchOptions, size: usize) -> std::io::Result<Row> {
    let stalled_name = endpoint_name("stalled");
    let stalled = register(target, &stalled_name)?; // never read
    let flood = Sender::connect(target, &stalled_name, size)?;
    let flood_stream = flood.out.get_ref().try_clone()?;
    let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flooder = {
        let flooding = flooding.clone();
        let mut flood = flood;
        std::thread::spawn(move || {
            let epoch = Instant::now();
            let mut n = 0;
            // Blocks once the bus holds it back; ends when the bus cuts the stalled
            // receiver (its endpoint is gone: errors it does not read) or we stop.
            while flooding.load(Ordering::Relaxed) && flood.send(n, epoch).is_ok() {
                n += 1;
            }
        })
    };
    // Let the stalled receiver's queue fill before measuring beside it.
    std::thread::sleep(Duration::from_millis(200));
    let names = [endpoint_name("healthy")];
    let measured = Sender::connect(target, &names[0], size)
        .and_then(|mut sender| latency(target, options, &names, &mut sender, Instant::now()));
    // Whatever happened, stop the flood and the stalled receiver.
    flooding.store(false, Ordering::Relaxed);
    let _ = flood_stream.shutdown(std::net::Shutdown::Both);
    drop(stalled);
    let _ = flooder.join();
    let (mut samples, took) = measured?;
    let rate = options.latency_samples as f64 / took.as_secs_f64();
    Ok(Row::measured(
        target,
        STALLED.to_owned(),
        size,
        (rate, rate),
        &mut samples,
    ))
}

pub(crate) fn connect(target: &Path) -> std::io::Result<UnixStream> {
    let stream = UnixStream::connect(target).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot connect to {}: {e}", target.display()),
        )
    })?;
    stream.set_read_timeout(Some(BENCH_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(BENCH_IO_TIMEOUT))?;
    Ok(stream)
}

pub(crate) fn write_frame(w: &mut impl Write, value: &Value) -> std::io::Result<()> {
    w.write_all(&frame::encode_json(value))
}

/// Reads one frame's payload into `buf`.
pub(crate) fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header)?;
    let len = u32::from_be_bytes(header) as usize;
    buf.resize(len, 0);
    r.read_exact(buf)
}

fn register(target: &Path, name: &str) -> std::io::Result<UnixStream> {
    let mut stream = connect(target)?;
    write_frame(&mut stream, &json!({"type": "register", "endpoint": name}))?;
    let mut buf = Vec::new();
    read_frame(&mut stream, &mut buf)?;
    Ok(stream)
}

pub(crate) struct Sender {
    out: BufWriter<UnixStream>,
    prefix: Vec<u8>,
    pad: String,
    scratch: Vec<u8>,
}

impl Sender {
    fn connect(target: &Path, to: &str, size: usize) -> std::io::Result<Self> {
        let prefix = format!(
            r#"{{"type":"message","to":{},"from":"bench","ts":1.0,"body":{{"t":"#,
            json!(to)
        );
        Self::on(connect(target)?, prefix, size)
    }

    /// A sender on `stream` whose frames start with `prefix` (up to the body's
    /// `"t":`), with bodies of `size` bytes.
    pub(crate) fn on(stream: UnixStream, prefix: String, size: usize) -> std::io::Result<Self> {
        // `{"t":"<20 digits>","pad":"…"}` is padded so the body is `size` bytes.
        let pad = "x".repeat(size.saturating_sub(r#"{"t":"00000000000000000000","pad":""}"#.len()));
        Ok(Self {
            out: BufWriter::with_capacity(64 * 1024, stream),
            prefix: prefix.into_bytes(),
            pad,
            scratch: Vec::new(),
        })
    }

    pub(crate) fn send(&mut self, n: u64, epoch: Instant) -> std::io::Result<()> {
        let t = epoch.elapsed().as_nanos() as u64;
        let mut frame = std::mem::take(&mut self.scratch);
        frame.clear();
        self.encode_at(n, t, &mut frame);
        let written = self.out.write_all(&frame);
        self.scratch = frame;
        written
    }

    /// Appends message `n`, sent at `t` ns, to `out`.
    fn encode_at(&self, n: u64, t: u64, out: &mut Vec<u8>) {
        let tail = format!(r#""{t:020}","pad":"{}"}},"id":"bench-{n}"}}"#, self.pad);
        out.extend_from_slice(&((self.prefix.len() + tail.len()) as u32).to_be_bytes());
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(tail.as_bytes());
    }

    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Receiving threads, one per endpoint.
pub(crate) struct Receivers {
    counts: Vec<Arc<AtomicU64>>,
    progress: mpsc::Receiver<()>,
    threads: Vec<std::thread::JoinHandle<std::io::Result<Vec<u64>>>>,
    streams: Vec<UnixStream>,
}

impl Receivers {
    fn start(
        target: &Path,
        names: &[String],
        epoch: Instant,
        timed: bool,
        poll: bool,
    ) -> std::io::Result<Self> {
        let streams = names
            .iter()
            .map(|name| register(target, name))
            .collect::<std::io::Result<Vec<_>>>()?;
        Self::on(streams, epoch, timed, poll)
    }

    /// Receivers reading connections already set up (registered, subscribed).
    pub(crate) fn on(
        connections: Vec<UnixStream>,
        epoch: Instant,
        timed: bool,
        poll: bool,
    ) -> std::io::Result<Self> {
        let (tx, progress) = mpsc::channel();
        let mut counts = Vec::new();
        let mut threads = Vec::new();
        let mut streams = Vec::new();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let spin = connections.len() < cores;
        for stream in connections {
            streams.push(stream.try_clone()?);
            let count = Arc::new(AtomicU64::new(0));
            counts.push(count.clone());
            let tx = tx.clone();
            threads.push(std::thread::spawn(move || {
                // Latency runs poll the socket instead of sleeping in `read`, so the
                // generator's own wake-up time is not counted as the bus's latency.
                if timed && poll {
                    stream.set_nonblocking(true)?;
                }
                let mut reader = BufReader::with_capacity(64 * 1024, Spin(stream, spin));
                let mut buf = Vec::new();
                let mut samples = Vec::new();
                loop {
                    if let Err(e) = read_frame(&mut reader, &mut buf) {
                        // Shut down by `stop`.
                        return if count.load(Ordering::Relaxed) == u64::MAX {
                            Ok(samples)
                        } else {
                            Err(e)
                        };
                    }
                    if timed {
                        let now = epoch.elapsed().as_nanos() as u64;
                        if let Some(t) = sent_at(&buf) {
                            samples.push(now.saturating_sub(t));
                        }
                    }
                    count.fetch_add(1, Ordering::Release);
                    let _ = tx.send(());
                }
            }));
        }
        Ok(Self {
            counts,
            progress,
            threads,
            streams,
        })
    }

    pub(crate) fn min_received(&self) -> u64 {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }

    pub(crate) fn wait_progress(&self, at_most: Duration) -> std::io::Result<()> {
        match self.progress.recv_timeout(at_most) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => Ok(()),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(std::io::Error::other("a receiver stopped"))
            }
        }
    }

    pub(crate) fn wait_for(&self, n: u64) -> std::io::Result<()> {
        let deadline = Instant::now() + BENCH_IO_TIMEOUT;
        while self.min_received() < n {
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "receivers got {} of {n} messages within {BENCH_IO_TIMEOUT:?}",
                    self.min_received()
                )));
            }
            if self.threads.iter().any(|t| t.is_finished()) {
                return Err(std::io::Error::other("a receiver lost its connection"));
            }
            self.wait_progress(Duration::from_millis(10))?;
        }
        Ok(())
    }

    pub(crate) fn stop(self) -> Vec<Vec<u64>> {
        for (count, stream) in self.counts.iter().zip(&self.streams) {
            count.store(u64::MAX, Ordering::Relaxed);
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        self.threads
            .into_iter()
            .filter_map(|t| t.join().ok()?.ok())
            .collect()
    }
}

/// A socket read that polls when the socket is non-blocking: it spins when the
/// machine has a core to spare (`.1`), and yields to other threads otherwise.
pub(crate) struct Spin(pub(crate) UnixStream, pub(crate) bool);

impl Read for Spin {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let deadline = Instant::now() + BENCH_IO_TIMEOUT;
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(std::io::ErrorKind::TimedOut.into());
                    }
                    if self.1 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
                other => return other,
            }
        }
    }
}

/// Writes the same way: on a non-blocking socket, waits out a full buffer.
impl Write for Spin {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let deadline = Instant::now() + BENCH_IO_TIMEOUT;
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(std::io::ErrorKind::TimedOut.into());
                    }
                    std::thread::yield_now();
                }
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The `t` field of a bench message's body.
fn sent_at(payload: &[u8]) -> Option<u64> {
    // hermes-bus re-serialises messages with a space after each colon.
    let at = payload.windows(4).position(|w| w == br#""t":"#)? + 4;
    let rest = payload.get(at..)?;
    let at = rest.iter().position(|&b| b == b'"')? + 1;
    std::str::from_utf8(rest.get(at..at + 20)?)
        .ok()?
        .parse()
        .ok()
}

fn measure_memory(target: &Path, connections: usize) -> std::io::Result<Memory> {
    let mut conn = connect(target)?;
    write_frame(&mut conn, &json!({"type": "status"}))?;
    let mut buf = Vec::new();
    read_frame(&mut conn, &mut buf)?;
    let status: Value = serde_json::from_slice(&buf).map_err(std::io::Error::other)?;
    let pid = status["pid"].as_i64().ok_or_else(|| {
        std::io::Error::other(
            "the server did not report its pid (memory is measured for hookbus only)",
        )
    })?;
    drop(conn);
    std::thread::sleep(Duration::from_millis(200));
    let idle_rss_kib = rss_kib(pid)?;
    let mut open = Vec::with_capacity(connections);
    for i in 0..connections {
        open.push(register(
            target,
            &format!("bench-idle-{}-{i}", std::process::id()),
        )?);
    }
    std::thread::sleep(Duration::from_millis(500));
    let loaded_rss_kib = rss_kib(pid)?;
    drop(open);
    Ok(Memory {
        target: target.to_owned(),
        pid,
        idle_rss_kib,
        connections,
        loaded_rss_kib,
    })
}

/// Resident set size of `pid`, from /proc.
pub fn rss_kib(pid: i64) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no VmRSS in /proc status"))
}

fn raise_fd_limit() {
    let _ = hookbus::fd_limit::raise_soft_limit();
}

/// Formats rows as a Markdown table, with each target's throughput relative to
/// the first target's.
pub fn markdown(rows: &[Row], memory: &[Memory], topics: bool) -> String {
    let mut out = String::from(
        "| target | scenario | body | msg/s | deliveries/s | p50 µs | p99 µs | vs first |\n|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        if let Some(error) = &row.failed {
            out.push_str(&format!(
                "| {} | {} | {} B | failed: {} | | | | |\n",
                row.target.display(),
                row.scenario,
                row.size,
                error.replace('|', "/")
            ));
            continue;
        }
        let base = rows
            .iter()
            .find(|r| r.scenario == row.scenario && r.size == row.size && r.failed.is_none())
            .map_or(row.msgs_per_sec, |r| r.msgs_per_sec);
        out.push_str(&format!(
            "| {} | {} | {} B | {:.0} | {:.0} | {:.1} | {:.1} | {:.2}× |\n",
            row.target.display(),
            row.scenario,
            row.size,
            row.msgs_per_sec,
            row.deliveries_per_sec,
            row.p50_us,
            row.p99_us,
            row.msgs_per_sec / base
        ));
    }
    if topics {
        let (p50, p99, n) =
            crate::bench_topics::match_cost(crate::bench_topics::TABLE_SUBSCRIPTIONS);
        out.push_str(&format!(
            "\nsubscription table alone, {n} subscriptions (half with wildcards): one match p50 {p50:.0} ns, p99 {p99:.0} ns\n"
        ));
    }
    for m in memory {
        out.push_str(&format!(
            "\nmemory of {} (pid {}): idle RSS {:.1} MiB; with {} idle registered connections {:.1} MiB = {:.1} KiB per connection\n",
            m.target.display(),
            m.pid,
            m.idle_rss_kib as f64 / 1024.0,
            m.connections,
            m.loaded_rss_kib as f64 / 1024.0,
            m.per_connection_bytes() / 1024.0
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_at_reads_the_timestamp() {
        let p = br#"{"type":"message","body":{"t":"00000000000000012345","pad":"x"}}"#;
        assert_eq!(sent_at(p), Some(12345));
        let p = br#"{"type": "message", "body": {"t": "00000000000000012345", "pad": "x"}}"#;
        assert_eq!(sent_at(p), Some(12345));
    }
}
