//! The Rust client: a long-lived [`Client`] that registers an endpoint, and
//! one-shot helpers ([`send_message`], [`query`]) for anonymous use.
//!
//! [`Client`] keeps its connection in a background task that answers the
//! heartbeat (it pings every [`ClientOptions::heartbeat`]), reconnects with
//! exponential backoff and registers again, and can start the daemon when none is
//! running. Received messages come out of [`Client::recv`] or, as a `Stream`,
//! from the client itself. Delivery is at most once: a message written to a
//! connection that then breaks may be lost, as with hermes-bus.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::frame::{self, DEFAULT_MAX_FRAME_LEN};

mod bus;
pub use bus::{Bus, Subscription, Target};

/// Messages waiting to be sent by a [`Client`].
pub const SEND_QUEUE: usize = 1024;

/// Received messages buffered for the application; when full the client stops
/// reading, and the daemon eventually disconnects it as a slow consumer.
pub const INBOX_CAPACITY: usize = 4096;

/// How long one-shot calls wait for the daemon's answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`send_message`] waits for an ack from a server that may not know
/// `hello` (a hermes-bus server never answers it).
pub const ACK_WAIT: Duration = Duration::from_secs(1);

/// Errors from the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    // `cause` is part of the message, not a chained source, so it prints once.
    #[error("no daemon at {}: {cause}; start one with `hookbus daemon start`", path.display())]
    Connect {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("connection to the bus failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the bus closed the connection")]
    Closed,
    #[error("no answer from the bus within {0:?}")]
    Timeout(Duration),
    #[error("the bus sent a frame that is not JSON: {0}")]
    BadReply(serde_json::Error),
    #[error("the bus answered `{code}`: {detail}")]
    Server { code: String, detail: String },
    #[error("could not start the daemon: {0}")]
    Autostart(String),
}

impl ClientError {
    /// The server's error code, for [`ClientError::Server`].
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    fn from_reply(reply: &Value) -> Self {
        ClientError::Server {
            code: reply["code"].as_str().unwrap_or("unknown").to_owned(),
            detail: reply["detail"].as_str().unwrap_or_default().to_owned(),
        }
    }
}

/// A framed connection: JSON values in, JSON values out.
#[derive(Debug)]
pub struct Conn {
    stream: UnixStream,
    buf: BytesMut,
}

impl Conn {
    /// Connects to the bus at `path`.
    pub async fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|cause| ClientError::Connect {
                path: path.to_owned(),
                cause,
            })?;
        Ok(Self {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
        })
    }

    /// Sends one frame.
    pub async fn send(&mut self, value: &Value) -> Result<(), ClientError> {
        self.stream.write_all(&frame::encode_json(value)).await?;
        Ok(())
    }

    /// Receives one frame; `Ok(None)` when the bus closed the connection.
    pub async fn recv(&mut self) -> Result<Option<Value>, ClientError> {
        loop {
            match frame::decode(&mut self.buf, DEFAULT_MAX_FRAME_LEN) {
                Ok(Some(frame)) => {
                    return serde_json::from_slice(frame::payload(&frame))
                        .map(Some)
                        .map_err(ClientError::BadReply);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e).into())
                }
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Receives one frame within `limit`.
    pub async fn recv_timeout(&mut self, limit: Duration) -> Result<Option<Value>, ClientError> {
        tokio::time::timeout(limit, self.recv())
            .await
            .map_err(|_| ClientError::Timeout(limit))?
    }
}

/// Sends `request` on a new anonymous connection and returns the first answer
/// (an `error` answer becomes [`ClientError::Server`]).
pub async fn query(socket: &Path, request: &Value) -> Result<Value, ClientError> {
    let mut conn = Conn::connect(socket).await?;
    conn.send(request).await?;
    let reply = conn
        .recv_timeout(REPLY_TIMEOUT)
        .await?
        .ok_or(ClientError::Closed)?;
    if reply["type"] == "error" {
        return Err(ClientError::from_reply(&reply));
    }
    Ok(reply)
}

/// The registered endpoints and their session ids.
pub async fn endpoints(socket: &Path) -> Result<serde_json::Map<String, Value>, ClientError> {
    let reply = query(socket, &json!({"type": "list_endpoints"})).await?;
    match reply {
        Value::Object(mut m) => match m.remove("endpoints") {
            Some(Value::Object(endpoints)) => Ok(endpoints),
            _ => Ok(Default::default()),
        },
        _ => Ok(Default::default()),
    }
}

/// What [`send_message`] learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The bus routed the message to this many sessions.
    Delivered(u64),
    /// A filter hook dropped the message: the hook's name and its reason.
    Dropped { hook: String, reason: String },
    /// The bus accepted the message without saying more (a hermes-bus server).
    Accepted,
}

/// Connects, sends one message from `from` to `to` (empty `to` broadcasts), and
/// disconnects: the counterpart of hermes-bus's `send_message`. A message to an
/// endpoint that is not connected fails with code `endpoint_not_found`.
pub async fn send_message(
    socket: &Path,
    to: &str,
    body: Value,
    from: &str,
) -> Result<Sent, ClientError> {
    let mut conn = Conn::connect(socket).await?;
    let id = uuid::Uuid::new_v4().to_string();
    conn.send(&json!({"type": "hello", "protocol": crate::protocol::PROTOCOL_VERSION, "features": ["acks"]}))
        .await?;
    conn.send(&json!({
        "type": "message", "to": to, "from": from, "id": id,
        "ts": crate::protocol::unix_now(), "body": body,
    }))
    .await?;
    loop {
        let reply = match conn.recv_timeout(ACK_WAIT).await {
            Ok(Some(reply)) => reply,
            // Closed or silent: a server without acks accepted it.
            Ok(None) | Err(ClientError::Timeout(_)) => return Ok(Sent::Accepted),
            Err(e) => return Err(e),
        };
        match reply["type"].as_str() {
            Some("ack") if reply["dropped_by"].is_string() => {
                return Ok(Sent::Dropped {
                    hook: reply["dropped_by"].as_str().unwrap_or_default().to_owned(),
                    reason: reply["reason"].as_str().unwrap_or_default().to_owned(),
                })
            }
            Some("ack") => return Ok(Sent::Delivered(reply["delivered"].as_u64().unwrap_or(0))),
            Some("error") => return Err(ClientError::from_reply(&reply)),
            _ => {} // `welcome`
        }
    }
}

/// Settings for a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The bus socket.
    pub socket: PathBuf,
    /// The endpoint name to register.
    pub endpoint: String,
    /// Interval between pings; keep it well under the daemon's heartbeat timeout.
    pub heartbeat: Duration,
    /// First reconnect delay; doubles up to `reconnect_max`.
    pub reconnect_initial: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Start the daemon (`PROGRAM daemon start --socket …`) when none answers.
    pub autostart: bool,
    /// The `hookbus` binary used by `autostart`; `hookbus` on `PATH` by default.
    pub daemon_program: PathBuf,
    /// Ask for `endpoint_not_found` errors on messages to unknown endpoints.
    pub errors: bool,
    /// When another connection registers this endpoint (`replaced`), register it
    /// again instead of stopping.
    pub take_over: bool,
}

impl ClientOptions {
    pub fn new(socket: impl Into<PathBuf>, endpoint: impl Into<String>) -> Self {
        Self {
            socket: socket.into(),
            endpoint: endpoint.into(),
            heartbeat: Duration::from_secs(30),
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            autostart: false,
            daemon_program: PathBuf::from("hookbus"),
            errors: false,
            take_over: false,
        }
    }
}

/// A registered, self-healing connection to the bus.
#[derive(Debug)]
pub struct Client {
    outgoing: mpsc::Sender<Value>,
    incoming: mpsc::Receiver<Value>,
    session: watch::Receiver<String>,
    endpoint: String,
    /// Why the client stopped by itself, once it has.
    ended: Arc<std::sync::Mutex<Option<String>>>,
}

impl Client {
    /// Connects and registers (starting the daemon first if `autostart` is set and
    /// none answers). Fails if the first connection cannot be made; later
    /// disconnects are healed in the background.
    pub async fn connect(options: ClientOptions) -> Result<Self, ClientError> {
        let (conn, session_id) = match register(&options).await {
            Ok(ok) => ok,
            Err(ClientError::Connect { .. }) if options.autostart => {
                autostart(&options).await?;
                register(&options).await?
            }
            Err(e) => return Err(e),
        };
        let (out_tx, out_rx) = mpsc::channel(SEND_QUEUE);
        let (in_tx, in_rx) = mpsc::channel(INBOX_CAPACITY);
        let (session_tx, session_rx) = watch::channel(session_id);
        let endpoint = options.endpoint.clone();
        let ended = Arc::new(std::sync::Mutex::new(None));
        tokio::spawn(run(options, conn, out_rx, in_tx, session_tx, ended.clone()));
        Ok(Self {
            outgoing: out_tx,
            incoming: in_rx,
            session: session_rx,
            endpoint,
            ended,
        })
    }

    /// The endpoint this client registered.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The session id of the current registration (changes after a reconnect).
    pub fn session_id(&self) -> String {
        self.session.borrow().clone()
    }

    /// Sends `body` to `to` (empty `to` broadcasts). Waits only for room in the
    /// send queue; while reconnecting, messages wait there.
    pub async fn send(&self, to: &str, body: Value) -> Result<(), ClientError> {
        self.send_raw(json!({
            "type": "message", "to": to, "from": self.endpoint,
            "id": uuid::Uuid::new_v4().to_string(), "ts": crate::protocol::unix_now(), "body": body,
        }))
        .await
    }

    /// Sends any frame as is.
    pub async fn send_raw(&self, frame: Value) -> Result<(), ClientError> {
        self.outgoing
            .send(frame)
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// The next received frame: messages, and error replies to what this client
    /// sent (pongs and the errors that end a connection are the client's own
    /// business); `None` once the client has stopped (see [`Client::ended`]).
    pub async fn recv(&mut self) -> Option<Value> {
        self.incoming.recv().await
    }

    /// Why the client stopped by itself (its endpoint was taken over by another
    /// connection and `take_over` is off), if it has.
    pub fn ended(&self) -> Option<String> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl tokio_stream::Stream for Client {
    type Item = Value;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Value>> {
        self.incoming.poll_recv(cx)
    }
}

async fn register(options: &ClientOptions) -> Result<(Conn, String), ClientError> {
    let mut conn = Conn::connect(&options.socket).await?;
    // `hello` also tells a hookbus server that this client understands its notices
    // (`shutting_down`); a hermes-bus server ignores it.
    let features: &[&str] = if options.errors { &["errors"] } else { &[] };
    conn.send(&json!({"type": "hello", "protocol": crate::protocol::PROTOCOL_VERSION, "features": features}))
        .await?;
    conn.send(&json!({"type": "register", "endpoint": options.endpoint}))
        .await?;
    loop {
        let reply = conn
            .recv_timeout(REPLY_TIMEOUT)
            .await?
            .ok_or(ClientError::Closed)?;
        match reply["type"].as_str() {
            Some("registered") => {
                let id = reply["session_id"].as_str().unwrap_or_default().to_owned();
                return Ok((conn, id));
            }
            Some("error") => return Err(ClientError::from_reply(&reply)),
            _ => {} // `welcome`
        }
    }
}

async fn autostart(options: &ClientOptions) -> Result<(), ClientError> {
    let program = &options.daemon_program;
    let status = tokio::process::Command::new(program)
        .args(["daemon", "start", "--socket"])
        .arg(&options.socket)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .map_err(|e| ClientError::Autostart(format!("cannot run {}: {e}", program.display())))?;
    if !status.success() {
        return Err(ClientError::Autostart(format!(
            "`{} daemon start` failed ({status}); see its log beside the socket",
            program.display()
        )));
    }
    Ok(())
}

/// The client's background task: one connection at a time, reconnecting forever
/// until the [`Client`] is dropped.
async fn run(
    options: ClientOptions,
    mut conn: Conn,
    mut outgoing: mpsc::Receiver<Value>,
    incoming: mpsc::Sender<Value>,
    session: watch::Sender<String>,
    ended: Arc<std::sync::Mutex<Option<String>>>,
) {
    loop {
        // While the bus is stopping or restarting, failed reconnects are expected.
        let mut quiet = false;
        match pump(&options, &mut conn, &mut outgoing, &incoming).await {
            Pump::ClientGone => return,
            Pump::Replaced(detail) if !options.take_over => {
                *ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(detail);
                return; // closes `incoming`: `recv` returns None
            }
            Pump::Replaced(detail) => {
                info!(endpoint = options.endpoint, %detail, "taking the endpoint back")
            }
            Pump::ShuttingDown => {
                info!(
                    endpoint = options.endpoint,
                    "the bus is shutting down; waiting for it to come back"
                );
                quiet = true;
            }
            Pump::Disconnected(reason) => {
                debug!(%reason, endpoint = options.endpoint, "disconnected from the bus")
            }
        }
        let mut delay = options.reconnect_initial;
        conn = loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = incoming.closed() => return,
            }
            let attempt = match register(&options).await {
                Err(ClientError::Connect { .. }) if options.autostart => {
                    match autostart(&options).await {
                        Ok(()) => register(&options).await,
                        Err(e) => Err(e),
                    }
                }
                other => other,
            };
            match attempt {
                Ok((conn, id)) => {
                    debug!(
                        endpoint = options.endpoint,
                        session_id = id,
                        "re-registered"
                    );
                    let _ = session.send(id);
                    break conn;
                }
                Err(e) if quiet => {
                    debug!(error = %e, retry_in = ?delay, "the bus is not back yet");
                    delay = (delay * 2).min(options.reconnect_max);
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?delay, "reconnect failed");
                    delay = (delay * 2).min(options.reconnect_max);
                }
            }
        };
    }
}

enum Pump {
    ClientGone,
    Disconnected(String),
    /// Another connection registered this endpoint.
    Replaced(String),
    /// The bus said it is stopping.
    ShuttingDown,
}

async fn pump(
    options: &ClientOptions,
    conn: &mut Conn,
    outgoing: &mut mpsc::Receiver<Value>,
    incoming: &mpsc::Sender<Value>,
) -> Pump {
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + options.heartbeat,
        options.heartbeat,
    );
    loop {
        tokio::select! {
            out = outgoing.recv() => {
                let Some(frame) = out else { return Pump::ClientGone };
                if let Err(e) = conn.send(&frame).await {
                    return Pump::Disconnected(e.to_string());
                }
            }
            received = conn.recv() => match received {
                Ok(Some(msg)) => {
                    if msg["type"] == "pong" {
                        continue;
                    }
                    if msg["type"] == "error" {
                        let detail = msg["detail"].as_str().unwrap_or_default().to_owned();
                        match msg["code"].as_str() {
                            Some("replaced") => return Pump::Replaced(detail),
                            Some("shutting_down") => return Pump::ShuttingDown,
                            Some(code @ ("heartbeat_timeout" | "slow_consumer")) => {
                                return Pump::Disconnected(format!("{code}: {detail}"))
                            }
                            _ => {}
                        }
                    }
                    if incoming.send(msg).await.is_err() {
                        return Pump::ClientGone;
                    }
                }
                Ok(None) => return Pump::Disconnected("the bus closed the connection".into()),
                // The frame was read whole: say so, and go on with the next one.
                Err(ClientError::BadReply(e)) => {
                    warn!(error = %e, endpoint = options.endpoint, "a frame from the bus is not valid JSON; skipped");
                }
                Err(e) => {
                    warn!(error = %e, endpoint = options.endpoint, "cannot read from the bus; reconnecting");
                    return Pump::Disconnected(e.to_string());
                }
            },
            _ = heartbeat.tick() => {
                if let Err(e) = conn.send(&json!({"type": "ping"})).await {
                    return Pump::Disconnected(e.to_string());
                }
            }
        }
    }
}
