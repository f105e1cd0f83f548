//! One client connection: a reader task that turns bytes into [`Request`]s for the
//! router, and a writer task that drains the connection's outbox into the socket.
//!
//! The reader parses frames (so parsing runs in parallel across connections) and
//! sends every request decoded from one read to the router as a single batch, in
//! order. The writer batches whatever is queued into one `write` call. It shares
//! the socket with the router, which writes a frame for an idle client itself
//! ([`crate::outbox::Outbox::send`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, Instrument};

use crate::budget::{Budget, Grant, FREE_FRAME};
use crate::flow::Flow;
use crate::frame::{self, OutFrame};
use crate::hooks::runtime::HookRuntime;
use crate::outbox::{self, Level, OutboxReceiver};
use crate::peer::Peer;
use crate::protocol::{self, ErrorCode, Op, ProtocolError, Request};
use crate::router::{Command, SessionKey};
use crate::server::Config;

/// Read buffer given to a new connection; it grows to fit the frame being read.
pub const READ_BUF_INITIAL: usize = 8 * 1024;

/// A read buffer larger than this is released once it is empty, so a connection
/// that once carried a big frame does not keep its memory while idle.
pub const READ_BUF_KEEP: usize = 16 * 1024;

/// Most requests of one read handed on as one batch (to the filter chain and the
/// router); a read that holds more is handed on in several.
pub const MAX_READ_BATCH: usize = 256;

/// How long filter hooks may go on with a read's requests once the server is
/// stopping, before the requests are abandoned.
pub const HOOK_STOP_GRACE: Duration = Duration::from_secs(1);

/// Most frames the writer takes from the outbox for one write.
pub const WRITE_BATCH: usize = 256;

/// Frames are coalesced into one write up to this many bytes.
pub const WRITE_BUF: usize = 64 * 1024;

/// How long the writer of a session the router closed gracefully (heartbeat
/// timeout, replaced, shutting down) goes on writing what was queued for it.
pub const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the writer tries to deliver a final error frame to a client that is
/// being disconnected.
pub const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves one accepted connection until it closes or the server shuts down.
/// What every connection shares: the server's settings, the memory budget, the
/// router and the shutdown signal.
#[derive(Clone)]
pub(crate) struct Shared {
    pub config: Arc<Config>,
    pub budget: Arc<Budget>,
    pub router: mpsc::Sender<Command>,
    pub shutdown: CancellationToken,
}

pub(crate) async fn serve(
    stream: UnixStream,
    key: SessionKey,
    peer: Peer,
    shared: Shared,
    tracker: &TaskTracker,
) {
    let Shared {
        config,
        budget,
        router,
        shutdown,
    } = shared;
    let (reader, writer) = stream.into_split();
    // Shared with the router, which writes to an idle client itself.
    let writer = Arc::new(writer);
    let (outbox, outbox_rx) = outbox::outbox(
        config.outbox_capacity,
        config.outbox_max_bytes,
        budget.clone(),
        Some(writer.clone()),
    );
    let flow = Arc::new(Flow::default());
    let open = Command::Open {
        key,
        peer,
        outbox,
        flow: flow.clone(),
    };
    if router.send(open).await.is_err() {
        return; // router gone: the server is stopping
    }
    // Cancelled when the writer stops, so the reader stops too.
    let closed = CancellationToken::new();
    tracker.spawn(write_loop(writer, outbox_rx, closed.clone()).in_current_span());
    let link = Link {
        key,
        config: &config,
        budget: &budget,
        router: &router,
        shutdown: &shutdown,
        flow: &flow,
    };
    read_loop(reader, &link, &closed).await;
    // When the server is stopping, the router closes every session itself, after
    // telling it so (`shutting_down`).
    if !shutdown.is_cancelled() {
        let _ = router.send(Command::Closed { key }).await;
    }
}

/// What a reader's wait ended with.
enum Step {
    Read(std::io::Result<usize>),
    /// The frame timer fired.
    Stalled,
    /// Room in the budget for the large frame being read.
    Room(Grant),
}

/// What a reader hands its requests on through.
struct Link<'a> {
    key: SessionKey,
    config: &'a Config,
    budget: &'a Arc<Budget>,
    router: &'a mpsc::Sender<Command>,
    shutdown: &'a CancellationToken,
    flow: &'a Arc<Flow>,
}

async fn read_loop(mut reader: OwnedReadHalf, link: &Link<'_>, closed: &CancellationToken) {
    let Link {
        config,
        budget,
        shutdown,
        flow,
        ..
    } = *link;
    let mut buf = BytesMut::with_capacity(READ_BUF_INITIAL);
    // The budget's grant for the frame being read, when it is over `FREE_FRAME`.
    // While it is held the buffer has grown for that frame: frames read into it
    // after it are copied out, so none pins the whole allocation, and what follows
    // moves to a small buffer once it is read.
    let mut frame_grant: Option<Grant> = None;
    // When the frame being read began, while one is partly read.
    let mut partial_since: Option<tokio::time::Instant> = None;
    // One timer per connection, armed when a partial frame first appears and
    // re-armed only when it fires early, so streaming costs no timer operation
    // per read.
    let mut stall_timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        if buf.capacity() == buf.len() {
            buf.reserve(READ_BUF_INITIAL);
        }
        // Room for a small frame being read (a large one gets it with its grant).
        let in_progress = frame::in_progress(&buf).filter(|&t| t > buf.len());
        if let Some(total) = in_progress {
            if total <= FREE_FRAME || frame_grant.is_some() {
                buf.reserve(total - buf.len());
            }
        }
        // What this connection waits for before it reads on: a receiver it filled
        // to drain (flow control); the memory budget to recover while it is spent
        // (a frame that already has its room reads on); room for the large frame
        // it is in. The frame's clock runs meanwhile, so nothing waits for ever.
        let held = flow.is_held();
        let spent = !held && frame_grant.is_none() && budget.spent();
        let needs_room =
            in_progress.filter(|&t| !held && !spent && t > FREE_FRAME && frame_grant.is_none());
        let stalled = async {
            match stall_timer.as_mut() {
                Some(timer) => timer.as_mut().await,
                None => std::future::pending().await,
            }
        };
        let step = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = closed.cancelled() => return,
            // A frame waiting for room is not on the clock yet.
            () = stalled, if needs_room.is_none() => Step::Stalled,
            () = flow.wait(), if held => continue,
            () = budget.recovered(), if spent => continue,
            grant = budget.take(needs_room.unwrap_or(0)), if needs_room.is_some() => {
                Step::Room(grant)
            }
            read = reader.read_buf(&mut buf), if !held && !spent && needs_room.is_none() => {
                Step::Read(read)
            }
        };
        let read = match step {
            Step::Read(read) => Some(read),
            Step::Stalled => None,
            Step::Room(grant) => {
                frame_grant = Some(grant);
                // Time spent waiting for the budget is not the client's.
                let now = tokio::time::Instant::now();
                partial_since = Some(now);
                if let Some(timer) = stall_timer.as_mut() {
                    timer.as_mut().reset(now + config.frame_timeout);
                }
                if let Some(total) = in_progress {
                    buf.reserve(total - buf.len());
                }
                continue;
            }
        };
        let Some(read) = read else {
            // The timer fired: is the frame in progress really that old?
            match partial_since {
                Some(since) if since.elapsed() >= config.frame_timeout => {
                    let detail = format!(
                        "{} bytes of a frame arrived, and not the rest within {} s; the connection will be closed",
                        buf.len(),
                        config.frame_timeout.as_secs_f64()
                    );
                    let error = ProtocolError::new(ErrorCode::FrameTimeout, detail);
                    let _ = forward(link, vec![Op::Invalid(Box::new(error)).into()], 0).await;
                    return;
                }
                Some(since) => {
                    if let Some(timer) = stall_timer.as_mut() {
                        timer.as_mut().reset(since + config.frame_timeout);
                    }
                }
                None => stall_timer = None,
            }
            continue;
        };
        match read {
            Ok(0) => {
                if !buf.is_empty() {
                    debug!(bytes = buf.len(), "peer closed in the middle of a frame");
                }
                return;
            }
            Ok(_) => {}
            Err(e) => {
                debug!(error = %e, "read failed");
                return;
            }
        }
        let mut requests = Vec::new();
        let mut bytes = 0;
        let mut fatal = false;
        let mut completed = 0usize;
        loop {
            if requests.len() == MAX_READ_BATCH
                && !forward(
                    link,
                    std::mem::take(&mut requests),
                    std::mem::take(&mut bytes),
                )
                .await
            {
                return;
            }
            match frame::decode(&mut buf, config.max_frame_len) {
                Ok(Some(frame)) => {
                    // The large frame the buffer grew for is the first completed;
                    // any after it in the same allocation are copied out.
                    let frame = if frame_grant.is_some() && completed > 0 {
                        Bytes::copy_from_slice(&frame)
                    } else {
                        frame
                    };
                    completed += 1;
                    bytes += frame.len();
                    requests.push(protocol::parse_within(frame, config.max_frame_len))
                }
                Ok(None) => break,
                Err(too_large) => {
                    let detail = format!("{too_large}; the connection will be closed");
                    requests.push(Request::from(Op::Invalid(Box::new(ProtocolError::new(
                        ErrorCode::FrameTooLarge,
                        detail,
                    )))));
                    fatal = true;
                    break;
                }
            }
        }
        if !requests.is_empty() && !forward(link, requests, bytes).await {
            return;
        }
        if fatal {
            return;
        }
        if completed > 0 && frame_grant.take().is_some() {
            // The large frame is read: its bytes are the batch's now. What follows
            // it moves to a buffer of its own, or the large allocation would stay
            // pinned (outside the budget) for as long as the connection lives.
            let mut rest = BytesMut::with_capacity(buf.len().max(READ_BUF_INITIAL));
            rest.extend_from_slice(&buf);
            buf = rest;
        }
        // The clock of the frame in progress starts when its first bytes arrive.
        if buf.is_empty() {
            partial_since = None;
        } else if partial_since.is_none() || completed > 0 {
            let now = tokio::time::Instant::now();
            partial_since = Some(now);
            if stall_timer.is_none() {
                stall_timer = Some(Box::pin(tokio::time::sleep_until(
                    now + config.frame_timeout,
                )));
            }
        }
        if buf.is_empty() && buf.capacity() > READ_BUF_KEEP {
            buf = BytesMut::with_capacity(READ_BUF_INITIAL);
        }
    }
}

/// Sends one read's requests to the router, through the filter chain first when
/// filter hooks are in force (run here, on this connection's task, so its order
/// holds). A hook with a full backlog and `overflow: block` makes this wait. Once
/// the server is stopping, hooks get [`HOOK_STOP_GRACE`] to finish with the batch;
/// after that it is abandoned (and logged) so a hung hook cannot hold the stop.
/// The batch's `bytes` count against the memory budget until the router is done
/// with it.
async fn forward(link: &Link<'_>, requests: Vec<Request>, bytes: usize) -> bool {
    let Link {
        key,
        config,
        budget,
        router,
        shutdown,
        flow,
    } = *link;
    let held = budget.hold(bytes);
    let requests = match &config.hooks {
        Some(hooks) if hooks.runs_inline() => {
            let n = requests.len();
            let stopping = async {
                shutdown.cancelled().await;
                tokio::time::sleep(HOOK_STOP_GRACE).await;
            };
            tokio::select! {
                requests = run_hooks(hooks, requests) => requests,
                () = stopping => {
                    tracing::warn!(requests = n, "the bus is stopping and a hook still holds these requests: not delivered");
                    return false;
                }
            }
        }
        _ => requests,
    };
    if requests.is_empty() {
        return true;
    }
    let slot = flow.slot(requests.len(), held).await;
    router
        .send(Command::Requests {
            key,
            requests,
            slot,
        })
        .await
        .is_ok()
}

/// The hooks' part of [`forward`]: admission (`overflow: block`) and filters.
async fn run_hooks(hooks: &HookRuntime, requests: Vec<Request>) -> Vec<Request> {
    hooks.admit(&requests).await;
    if hooks.has_filters() {
        hooks.filter(requests).await
    } else {
        requests
    }
}

/// Drains the outbox into the socket. The socket's write side is shut down when
/// the last of its holders (this task, the router's outbox) lets go of it.
async fn write_loop(
    writer: Arc<OwnedWriteHalf>,
    mut outbox: OutboxReceiver,
    closed: CancellationToken,
) {
    let level = outbox.level().clone();
    let mut batch: Vec<OutFrame> = Vec::with_capacity(WRITE_BATCH);
    // The abort signal's sender is dropped, unsent, when the router closes the
    // session gracefully; from then on only the queue matters, for at most
    // `CLOSE_FLUSH_TIMEOUT`.
    let mut may_abort = true;
    let mut flush_deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    // Whether the reader stops too: not when the client only stopped taking what
    // it is sent (it may still be sending; what it sent is read to the end).
    let mut stop_reader = true;
    loop {
        let late = async {
            match flush_deadline.as_mut() {
                Some(deadline) => deadline.as_mut().await,
                None => std::future::pending().await,
            }
        };
        let n = tokio::select! {
            biased;
            reason = &mut outbox.abort, if may_abort => match reason {
                Ok(reason) => {
                    // Not after the part of a frame the router wrote.
                    if !level.torn() {
                        let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, write_counted(&writer, &reason, &level)).await;
                    }
                    break;
                }
                Err(_) => {
                    may_abort = false;
                    flush_deadline = Some(Box::pin(tokio::time::sleep(CLOSE_FLUSH_TIMEOUT)));
                    continue;
                }
            },
            () = late => break,
            n = outbox.rx.recv_many(&mut batch, WRITE_BATCH) => n,
        };
        if n == 0 {
            break; // the router dropped the outbox and everything queued is written
        }
        let bytes: usize = batch.iter().map(OutFrame::len).sum();
        let late = async {
            match flush_deadline.as_mut() {
                Some(deadline) => deadline.as_mut().await,
                None => std::future::pending().await,
            }
        };
        let written = tokio::select! {
            biased;
            // Aborted mid-write: the stream may be inside a frame, so no reason frame.
            Ok(_) = &mut outbox.abort, if may_abort => break,
            () = late => {
                debug!("closing client took nothing for {CLOSE_FLUSH_TIMEOUT:?}: what was queued for it is discarded");
                break;
            }
            written = write_batch(&writer, &batch, bytes, &level) => written,
        };
        // The router closed the session gracefully while the batch was being
        // written: the abort signal's sender went unsent, and the `Ok` pattern
        // above let the write go on. The receiver is spent (polling it again
        // would panic), and the flush clock starts now.
        if may_abort && outbox.abort.is_terminated() {
            may_abort = false;
            flush_deadline = Some(Box::pin(tokio::time::sleep(CLOSE_FLUSH_TIMEOUT)));
        }
        batch.clear();
        outbox.release(bytes);
        if let Err(e) = written {
            debug!(error = %e, "write failed: the client takes nothing more");
            stop_reader = false;
            break;
        }
    }
    // Cut short: the frames in hand go with the rest of the queue.
    outbox.release(batch.iter().map(OutFrame::len).sum());
    drop(batch);
    drop(outbox);
    drop(writer);
    if stop_reader {
        closed.cancel();
    }
}

/// Writes frames, coalescing heads and small tails into one buffer per
/// `WRITE_BUF` bytes; a large tail is written from where it is.
async fn write_batch(
    writer: &OwnedWriteHalf,
    batch: &[OutFrame],
    bytes: usize,
    level: &Level,
) -> std::io::Result<()> {
    if let [OutFrame::Whole(frame)] = batch {
        return write_counted(writer, frame, level).await;
    }
    let mut out = Vec::with_capacity(bytes.min(WRITE_BUF));
    for frame in batch {
        if !out.is_empty() && out.len() + frame::MAX_EVENT_HEAD > WRITE_BUF {
            write_counted(writer, &out, level).await?;
            out.clear();
        }
        let tail = frame.put_head(&mut out);
        if tail.len() >= WRITE_BUF {
            write_counted(writer, &out, level).await?;
            out.clear();
            write_counted(writer, tail, level).await?;
        } else {
            if out.len() + tail.len() > WRITE_BUF {
                write_counted(writer, &out, level).await?;
                out.clear();
            }
            out.extend_from_slice(tail);
        }
    }
    if !out.is_empty() {
        write_counted(writer, &out, level).await?;
    }
    Ok(())
}

/// `write_all`, counting every write the client took as progress: a client that
/// reads a large batch slowly but steadily is not taken for a stalled one.
async fn write_counted(
    writer: &OwnedWriteHalf,
    mut buf: &[u8],
    level: &Level,
) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = match writer.try_write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                writer.writable().await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        level.wrote();
        buf = &buf[n..];
    }
    Ok(())
}
