//! The accept loop: checks each peer, then hands the connection to
//! [`connection::serve`]; owns graceful shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, info_span, warn, Instrument};

use crate::budget::{Budget, DEFAULT_MEMORY_BUDGET};
use crate::connection::{self, Shared};
use crate::frame::DEFAULT_MAX_FRAME_LEN;
use crate::hooks::runtime::{EmitPort, HookRuntime};
use crate::outbox::{OUTBOX_CAPACITY, OUTBOX_MAX_BYTES};
use crate::peer::Peer;
use crate::protocol::Routed;
use crate::protocol::{ErrorCode, ProtocolError};
use crate::router::{Command, Router, RouterConfig, DEFAULT_HEARTBEAT_TIMEOUT, ROUTER_QUEUE};
use crate::store::{Store, StoreConfig};

/// Most connections served at once; more are answered `too_many_connections`.
pub const MAX_CONNECTIONS: usize = 10_000;

/// How long shutdown waits for writers to flush queued frames.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Default longest time a client may take to send one frame.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// Default bound on a daemon's whole stop after SIGTERM (drain, hooks, processes).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The socket path, as reported by `status`.
    pub socket_path: PathBuf,
    /// Largest accepted frame payload.
    pub max_frame_len: usize,
    /// Registered sessions silent for longer are closed.
    pub heartbeat_timeout: Duration,
    /// Frames queued per connection; past half of it, its senders are held back.
    pub outbox_capacity: usize,
    /// Bytes queued per connection; past half of it, its senders are held back.
    pub outbox_max_bytes: usize,
    /// The hook engine, if hooks are enabled.
    pub hooks: Option<Arc<HookRuntime>>,
    /// The daemon stops within this long after SIGTERM, whatever clients and
    /// hooks do.
    pub shutdown_timeout: Duration,
    /// A receiver whose outbox is past high water and that reads nothing for this
    /// long is disconnected as a slow consumer (its senders are held back meanwhile).
    pub slow_consumer_timeout: Duration,
    /// A connection that stays inside one frame longer than this is closed
    /// (`frame_timeout`), so a stalled partial frame cannot pin memory.
    pub frame_timeout: Duration,
    /// Bytes the bus may hold for its clients in all: frames being read, on their
    /// way to the router and queued for delivery ([`crate::budget`]).
    pub memory_budget: usize,
    /// The durable store (KV); `None` runs the bus without one.
    pub store: Option<StoreConfig>,
    /// How long a single-threaded runtime goes on polling its sockets after
    /// the router's last work ([`crate::spin`]); zero sleeps at once.
    pub spin: Duration,
}

impl Config {
    pub fn new(socket_path: impl Into<PathBuf>) -> Self {
        Self {
            socket_path: socket_path.into(),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            outbox_capacity: OUTBOX_CAPACITY,
            outbox_max_bytes: OUTBOX_MAX_BYTES,
            hooks: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
            slow_consumer_timeout: crate::router::DEFAULT_STALL_TIMEOUT,
            spin: crate::spin::DEFAULT_SPIN_WINDOW,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            store: None,
        }
    }
}

/// Serves `listener` until `shutdown` is cancelled, then stops accepting, stops
/// reading, lets writers flush (up to [`DRAIN_TIMEOUT`]) and returns.
pub async fn run(listener: UnixListener, config: Config, shutdown: CancellationToken) {
    let config = Arc::new(config);
    let budget = Budget::new(config.memory_budget);
    let (router_tx, router_rx) = mpsc::channel(ROUTER_QUEUE);
    // Polling on after traffic pays only where one thread runs everything: on a
    // multi-threaded runtime the poller would hold a worker the others wait for.
    let single_thread = tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread;
    let spin = crate::spin::Spin::new(if single_thread {
        config.spin
    } else {
        Duration::ZERO
    });
    let router = Router::new(RouterConfig {
        socket_path: config.socket_path.clone(),
        max_frame_len: config.max_frame_len,
        heartbeat_timeout: config.heartbeat_timeout,
        stall_timeout: config.slow_consumer_timeout,
        hooks: config.hooks.clone(),
        budget: budget.clone(),
        spin: spin.clone(),
    });
    let (router, from_store, store_thread) = match config.store.clone() {
        None => (router, None, None),
        Some(store) => match tokio::task::spawn_blocking(move || Store::start(store)).await {
            Ok(Ok(started)) => (
                router.with_store(started.store, started.kv, started.retained),
                Some(started.from_store),
                Some(started.thread),
            ),
            Ok(Err(e)) => {
                warn!(error = %e, "cannot start the store thread: the bus runs without a store");
                (router, None, None)
            }
            Err(e) => {
                warn!(error = %e, "opening the store panicked: the bus runs without a store");
                (router, None, None)
            }
        },
    };
    if let Some(hooks) = &config.hooks {
        // Held weakly, so the router still stops when the server does.
        hooks.start(EmitToRouter(router_tx.downgrade()));
    }
    let tracker = TaskTracker::new();
    tracker.spawn(router.run(router_rx, from_store));
    tracker.spawn(spin.run(shutdown.clone()));

    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut reserve = crate::fd_limit::Reserve::new();
    let my_uid = nix::unistd::geteuid().as_raw();
    let mut next_key = 0u64;
    info!(socket = %config.socket_path.display(), "listening");
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if crate::fd_limit::is_exhausted(&e) => {
                    reserve.turn_away(&listener).await;
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (peer, rejection) = match Peer::of(&stream) {
            Ok(peer) if peer.uid == my_uid => (Some(peer), None),
            Ok(peer) => (
                None,
                Some(ProtocolError::new(
                    ErrorCode::PermissionDenied,
                    format!(
                        "this bus belongs to uid {my_uid}; uid {} may not connect",
                        peer.uid
                    ),
                )),
            ),
            Err(e) => (
                None,
                Some(ProtocolError::new(
                    ErrorCode::PermissionDenied,
                    format!("cannot read peer credentials: {e}"),
                )),
            ),
        };
        let (peer, permit) = match (peer, rejection, permits.clone().try_acquire_owned()) {
            (Some(peer), None, Ok(permit)) => (peer, permit),
            (_, rejection, acquired) => {
                let error = rejection.unwrap_or_else(|| {
                    ProtocolError::new(
                        ErrorCode::TooManyConnections,
                        format!("the bus serves at most {MAX_CONNECTIONS} connections; close some and retry"),
                    )
                });
                drop(acquired);
                warn!(%error, "connection refused");
                let _ = router_tx.send(Command::Rejected).await;
                tracker.spawn(refuse(stream, error));
                continue;
            }
        };
        next_key += 1;
        let key = next_key;
        let shared = Shared {
            config: config.clone(),
            budget: budget.clone(),
            router: router_tx.clone(),
            shutdown: shutdown.clone(),
        };
        let inner = tracker.clone();
        tracker.spawn(
            async move {
                connection::serve(stream, key, peer, shared, &inner).await;
                drop(permit);
            }
            .instrument(info_span!("conn", key)),
        );
    }
    let _ = router_tx.send(Command::ShuttingDown).await;
    drop(router_tx);
    tracker.close();
    let drain = DRAIN_TIMEOUT.min(config.shutdown_timeout);
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        warn!("some clients did not take their queued messages within {drain:?}; closing anyway");
    }
    if let Some(thread) = store_thread {
        // The router has stopped and dropped its handle: the store commits what
        // it was given and closes the database.
        let joined = tokio::task::spawn_blocking(move || thread.join());
        if tokio::time::timeout(Duration::from_secs(5), joined)
            .await
            .is_err()
        {
            warn!("the store did not close within 5 s");
        }
    }
    info!("server stopped");
}

/// The port through which hooks' emits enter the router.
struct EmitToRouter(mpsc::WeakSender<Command>);

impl EmitPort for EmitToRouter {
    fn emit(&self, msg: Routed) -> Result<(), String> {
        let router = self.0.upgrade().ok_or("the bus is not running")?;
        router
            .try_send(Command::Emitted(msg))
            .map_err(|_| "the bus is busy; try again".to_owned())
    }
}

/// Sends `error` and closes, reading (and discarding) what the peer sends for a
/// moment so the close does not reset the connection before it reads the error.
async fn refuse(mut stream: UnixStream, error: ProtocolError) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&error.to_frame()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}
