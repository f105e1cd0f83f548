//! [`Bus`]: a protocol-2 connection for topics, request/reply and the monitor.
//!
//! One reader task routes what arrives: answers by `rid` to the call waiting
//! for them, events and requests by `sid` to their [`Subscription`], plain
//! messages to [`Bus::recv`]. Each subscription has a bounded queue; when the
//! application does not drain one, the reader waits, the socket fills and the
//! bus applies the subscription's `on_full` policy. Unlike [`super::Client`] a
//! `Bus` does not reconnect: when the connection ends its streams end.

use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use super::ClientError;
use crate::frame;

/// Frames queued for one subscription (or the plain-message inbox) before the
/// reader waits for the application.
pub const STREAM_CAPACITY: usize = 1024;

/// How long a call waits for its answer (not a request's response: that has
/// its own timeout).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a waiting call wants from its answer.
enum Waiter {
    /// The answer itself.
    Answer(oneshot::Sender<Value>),
    /// A `subscribed`/`monitoring` answer: the reader opens the stream before it
    /// reads on, so retained events that follow at once are not missed.
    Stream(oneshot::Sender<Result<(StreamId, mpsc::Receiver<Value>), Value>>),
}

/// What the frames of a stream carry to name it: a subscription's `sid`, a
/// KV watch's `wid`, a replay's number, or a durable consumer's stream and
/// name (`stream/durable`: neither may hold a `/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum StreamId {
    Sid(u64),
    Wid(u64),
    Replay(u64),
    Consumer(Box<str>),
}

impl StreamId {
    fn of(frame: &Value) -> Option<Self> {
        if let Some(sid) = frame.get("sid") {
            return sid.as_u64().map(StreamId::Sid);
        }
        if let Some(wid) = frame.get("wid") {
            return wid.as_u64().map(StreamId::Wid);
        }
        if let Some(durable) = frame.get("durable").and_then(Value::as_str) {
            let stream = frame.get("stream")?.as_str()?;
            return Some(StreamId::Consumer(format!("{stream}/{durable}").into()));
        }
        frame.get("replay")?.as_u64().map(StreamId::Replay)
    }
}

#[derive(Default)]
struct Routes {
    waiting: HashMap<u64, Waiter>,
    streams: HashMap<StreamId, mpsc::Sender<Value>>,
}

/// A protocol-2 connection (features `topics`, `rpc`, `monitor` as asked).
pub struct Bus {
    out: mpsc::Sender<Bytes>,
    routes: Arc<Mutex<Routes>>,
    next_rid: AtomicU64,
    inbox: tokio::sync::Mutex<mpsc::Receiver<Value>>,
    welcome: Value,
}

impl Bus {
    /// Connects, says `hello` with `features`, and registers `endpoint` if given.
    pub async fn connect(
        socket: &Path,
        endpoint: Option<&str>,
        features: &[&str],
    ) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|cause| ClientError::Connect {
                path: socket.to_owned(),
                cause,
            })?;
        let (read, mut write) = stream.into_split();
        let (out, mut out_rx) = mpsc::channel::<Bytes>(STREAM_CAPACITY);
        tokio::spawn(async move {
            while let Some(frame) = out_rx.recv().await {
                if write.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        let routes = Arc::new(Mutex::new(Routes::default()));
        let (inbox_tx, inbox) = mpsc::channel(STREAM_CAPACITY);
        tokio::spawn(read_loop(read, routes.clone(), inbox_tx));
        let mut bus = Bus {
            out,
            routes,
            next_rid: AtomicU64::new(1),
            inbox: tokio::sync::Mutex::new(inbox),
            welcome: Value::Null,
        };
        bus.welcome = bus
            .call(json!({"type": "hello", "protocol": 2, "features": features}))
            .await?;
        if bus.welcome["type"] != "welcome" {
            return Err(ClientError::Server {
                code: "no_welcome".into(),
                detail: format!(
                    "this bus does not speak protocol 2 (answered {})",
                    bus.welcome
                ),
            });
        }
        if let Some(name) = endpoint {
            bus.call(json!({"type": "register", "endpoint": name}))
                .await?;
        }
        Ok(bus)
    }

    /// The server's `welcome` (granted features, frame limit).
    pub fn welcome(&self) -> &Value {
        &self.welcome
    }

    async fn send(&self, frame: &Value) -> Result<(), ClientError> {
        self.out
            .send(frame::encode_json(frame))
            .await
            .map_err(|_| ClientError::Closed)
    }

    fn rid(&self) -> u64 {
        self.next_rid.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends `request` with a fresh `rid` and waits for the answer; an `error`
    /// answer becomes [`ClientError::Server`].
    pub async fn call(&self, mut request: Value) -> Result<Value, ClientError> {
        self.call_within(&mut request, ANSWER_TIMEOUT).await
    }

    /// [`Bus::call`] for a request the bus may answer late (a claim that waits).
    pub async fn call_waiting(
        &self,
        mut request: Value,
        wait: Duration,
    ) -> Result<Value, ClientError> {
        self.call_within(&mut request, wait + ANSWER_TIMEOUT).await
    }

    async fn call_within(
        &self,
        request: &mut Value,
        limit: Duration,
    ) -> Result<Value, ClientError> {
        let rid = self.rid();
        request["rid"] = rid.into();
        let (tx, rx) = oneshot::channel();
        lock(&self.routes).waiting.insert(rid, Waiter::Answer(tx));
        self.send(request).await?;
        let answer = match tokio::time::timeout(limit, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => return Err(ClientError::Closed),
            Err(_) => {
                lock(&self.routes).waiting.remove(&rid);
                return Err(ClientError::Timeout(limit));
            }
        };
        if answer["type"] == "error" {
            return Err(ClientError::from_reply(&answer));
        }
        Ok(answer)
    }

    async fn open_stream(&self, mut request: Value) -> Result<Subscription, ClientError> {
        let rid = self.rid();
        request["rid"] = rid.into();
        let (tx, rx) = oneshot::channel();
        lock(&self.routes).waiting.insert(rid, Waiter::Stream(tx));
        self.send(&request).await?;
        match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
            Ok(Ok(Ok((id, events)))) => Ok(Subscription {
                id,
                events,
                out: self.out.clone(),
            }),
            Ok(Ok(Err(error))) => Err(ClientError::from_reply(&error)),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                lock(&self.routes).waiting.remove(&rid);
                Err(ClientError::Timeout(ANSWER_TIMEOUT))
            }
        }
    }

    /// Publishes `body` on `subject` (kept as its retained value with `retain`).
    pub async fn publish(
        &self,
        subject: &str,
        body: Value,
        retain: bool,
    ) -> Result<(), ClientError> {
        self.send(&json!({"type": "publish", "subject": subject, "body": body, "retain": retain}))
            .await
    }

    /// Subscribes to `pattern` (in queue group `queue`, if any); events come out of
    /// the returned stream, retained values first.
    pub async fn subscribe(
        &self,
        pattern: &str,
        queue: Option<&str>,
    ) -> Result<Subscription, ClientError> {
        let mut request = json!({"type": "subscribe", "subject": pattern});
        if let Some(queue) = queue {
            request["queue"] = queue.into();
        }
        self.open_stream(request).await
    }

    /// Watches every frame the bus routes, optionally only those whose subject
    /// matches `pattern` (feature `monitor`).
    pub async fn monitor(&self, pattern: Option<&str>) -> Result<Subscription, ClientError> {
        let mut request = json!({"type": "monitor"});
        if let Some(pattern) = pattern {
            request["subject"] = pattern.into();
        }
        self.open_stream(request).await
    }

    /// Sends a request to `target` and waits for its `response` frame (at most
    /// `timeout`; the bus answers `timeout` then).
    pub async fn request(
        &self,
        target: Target<'_>,
        body: Value,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let ms = timeout
            .as_millis()
            .clamp(1, crate::protocol::request::MAX_TIMEOUT.as_millis()) as u64;
        let mut request = json!({"type": "request", "body": body, "timeout_ms": ms});
        match target {
            Target::Subject(s) => request["subject"] = s.into(),
            Target::Endpoint(e) => request["to"] = e.into(),
        }
        // The bus answers by the deadline itself; wait a little longer.
        self.call_within(&mut request, timeout + Duration::from_secs(2))
            .await
    }

    /// Answers a request this connection received.
    pub async fn reply(&self, reply_to: &str, body: Value) -> Result<(), ClientError> {
        self.send(&json!({"type": "reply", "reply_to": reply_to, "body": body}))
            .await
    }

    /// Serves requests on `pattern`: `request` frames come out of the stream;
    /// answer each with [`Bus::reply`] (its `reply_to`).
    pub async fn serve(
        &self,
        pattern: &str,
        queue: Option<&str>,
    ) -> Result<Subscription, ClientError> {
        self.subscribe(pattern, queue).await
    }

    /// Stores `value` under `key` (feature `kv`), kept for `ttl` if given, only
    /// over revision `if_revision` if given (0: only if the key is absent).
    /// Returns the new revision, once it is on disk.
    pub async fn kv_put(
        &self,
        key: &str,
        value: Value,
        ttl: Option<Duration>,
        if_revision: Option<u64>,
    ) -> Result<u64, ClientError> {
        let mut request = json!({"type": "kv_put", "key": key, "value": value});
        if let Some(ttl) = ttl {
            request["ttl_s"] = ttl.as_secs_f64().into();
        }
        if let Some(rev) = if_revision {
            request["if_revision"] = rev.into();
        }
        let answer = self.call(request).await?;
        Ok(answer["revision"].as_u64().unwrap_or_default())
    }

    /// The `kv_value` frame of `key` (`value`, `revision`, `expires_at_ms`);
    /// a missing key is [`ClientError::Server`] with code `not_found`.
    pub async fn kv_get(&self, key: &str) -> Result<Value, ClientError> {
        self.call(json!({"type": "kv_get", "key": key})).await
    }

    /// Deletes `key` (only at revision `if_revision` if given); returns the
    /// deletion's revision.
    pub async fn kv_delete(&self, key: &str, if_revision: Option<u64>) -> Result<u64, ClientError> {
        let mut request = json!({"type": "kv_delete", "key": key});
        if let Some(rev) = if_revision {
            request["if_revision"] = rev.into();
        }
        let answer = self.call(request).await?;
        Ok(answer["revision"].as_u64().unwrap_or_default())
    }

    /// Keys starting with `prefix`, sorted (at most 10 000; `more` in the
    /// answer says when there are others).
    pub async fn kv_keys(&self, prefix: &str) -> Result<Vec<String>, ClientError> {
        let answer = self
            .call(json!({"type": "kv_keys", "prefix": prefix}))
            .await?;
        Ok(serde_json::from_value(answer["keys"].clone()).unwrap_or_default())
    }

    /// Watches keys matching `pattern`: `kv_change` frames for the current
    /// values (`op: put`), one `kv_synced`, then every change in order.
    pub async fn kv_watch(&self, pattern: &str) -> Result<Subscription, ClientError> {
        self.open_stream(json!({"type": "kv_watch", "key": pattern}))
            .await
    }

    /// Publishes a job on `goal` (feature `jobs`). `options` may hold
    /// `idempotency_key`, `priority`, `delay_ms`, `max_attempts` and
    /// `backoff_ms`. Returns the `job_published` answer (`job`, `duplicate`),
    /// once it is on disk.
    pub async fn job_publish(
        &self,
        goal: &str,
        payload: Value,
        options: Value,
    ) -> Result<Value, ClientError> {
        let mut request = json!({"type": "job_publish", "goal": goal, "payload": payload});
        merge(&mut request, options);
        self.call(request).await
    }

    /// Claims a job whose goal matches `pattern` for `lease`, waiting up to
    /// `wait` for one: the `job` frame (`job`, `payload`, `attempt`, `lease`,
    /// `lease_until_ms`), or `None` when none came.
    pub async fn job_claim(
        &self,
        pattern: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<Value>, ClientError> {
        let request = json!({"type": "job_claim", "goal": pattern,
            "lease_ms": lease.as_millis() as u64, "wait_ms": wait.as_millis() as u64});
        let answer = self.call_waiting(request, wait).await?;
        Ok((answer["type"] == "job").then_some(answer))
    }

    /// Extends the lease of a claimed job (`job` is the `job` frame);
    /// `lease_lost` when it is not the job's lease any more.
    pub async fn job_extend(&self, job: &Value, lease: Duration) -> Result<Value, ClientError> {
        self.call(
            json!({"type": "job_extend", "job": job["job"], "lease": job["lease"],
            "lease_ms": lease.as_millis() as u64}),
        )
        .await
    }

    /// Fulfils a claimed job with `result`.
    pub async fn job_fulfill(&self, job: &Value, result: Value) -> Result<(), ClientError> {
        self.call(json!({"type": "job_fulfill", "job": job["job"], "lease": job["lease"], "result": result}))
            .await
            .map(drop)
    }

    /// Fails a claimed job: queued again with backoff if `retry` and attempts
    /// remain, else dead. Returns the `job_failed` answer (`state`, `ready_at_ms`).
    pub async fn job_fail(
        &self,
        job: &Value,
        error: &str,
        retry: bool,
    ) -> Result<Value, ClientError> {
        self.call(
            json!({"type": "job_fail", "job": job["job"], "lease": job["lease"],
            "error": error, "retry": retry}),
        )
        .await
    }

    /// Replays stream `stream` (feature `streams`) from `from` (`"first"`,
    /// `"last"`, `"new"`, `{"seq":n}`, `{"time_ms":t}` or `{"id":…}`), only
    /// subjects matching `subject` if given: `stream_event` frames, then
    /// `replay_end`.
    pub async fn replay(
        &self,
        stream: &str,
        from: Value,
        subject: Option<&str>,
    ) -> Result<Subscription, ClientError> {
        let mut request = json!({"type": "replay", "stream": stream, "from": from});
        if let Some(subject) = subject {
            request["subject"] = subject.into();
        }
        self.open_stream(request).await
    }

    /// Consumes durable consumer `durable` of stream `stream` (feature
    /// `streams`), creating it if it is new. `settings` may hold `subject`,
    /// `from` (where a new one starts), `ack_wait_ms`, `max_deliver` and
    /// `max_ack_pending`. The stream yields `stream_event` frames (with
    /// `seq` and `deliveries`); acknowledge each with [`Bus::stream_ack`].
    /// Dropping it stops consuming: what is unacknowledged goes to the next
    /// consumer.
    pub async fn consume(
        &self,
        stream: &str,
        durable: &str,
        settings: Value,
    ) -> Result<Subscription, ClientError> {
        let mut request = json!({"type": "consume", "stream": stream, "durable": durable});
        merge(&mut request, settings);
        self.open_stream(request).await
    }

    /// Says what became of message `seq` of a consumer: `"ack"`, `"nak"`
    /// (delivered again after `delay_ms`), `"term"` (never again) or
    /// `"progress"` (its ack wait starts over).
    pub async fn stream_ack(
        &self,
        stream: &str,
        durable: &str,
        seq: u64,
        op: &str,
        delay_ms: Option<u64>,
    ) -> Result<(), ClientError> {
        let mut request = json!({"type": "stream_ack", "stream": stream, "durable": durable, "seq": seq, "op": op});
        if let Some(delay) = delay_ms {
            request["delay_ms"] = delay.into();
        }
        self.call(request).await.map(drop)
    }

    /// The next plain message (hermes `message` frames, errors no call waited for).
    pub async fn recv(&self) -> Option<Value> {
        self.inbox.lock().await.recv().await
    }

    /// Says `bye` (the will, if any, is not published) and waits for the answer.
    pub async fn bye(&self) -> Result<(), ClientError> {
        self.call(json!({"type": "bye"})).await.map(drop)
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Subject(&'a str),
    Endpoint(&'a str),
}

/// Events (or requests, or monitor copies) of one subscription, as a `Stream`.
/// Dropping it unsubscribes.
pub struct Subscription {
    id: StreamId,
    events: mpsc::Receiver<Value>,
    out: mpsc::Sender<Bytes>,
}

impl Subscription {
    /// The `sid` (or a KV watch's `wid`, a replay's number; 0 for a consumer).
    pub fn sid(&self) -> u64 {
        match self.id {
            StreamId::Sid(n) | StreamId::Wid(n) | StreamId::Replay(n) => n,
            StreamId::Consumer(_) => 0,
        }
    }

    /// The next frame; `None` when the connection ended.
    pub async fn recv(&mut self) -> Option<Value> {
        self.events.recv().await
    }
}

impl tokio_stream::Stream for Subscription {
    type Item = Value;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Value>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let frame = frame::encode_json(&match self.id {
            StreamId::Sid(sid) => json!({"type": "unsubscribe", "sid": sid}),
            StreamId::Wid(wid) => json!({"type": "kv_unwatch", "wid": wid}),
            // A replay ends by itself (`replay_end`), or with the connection.
            StreamId::Replay(_) => return,
            StreamId::Consumer(ref name) => {
                let (stream, durable) = name.split_once('/').unwrap_or_default();
                json!({"type": "unconsume", "stream": stream, "durable": durable})
            }
        });
        let _ = self.out.try_send(frame);
    }
}

/// Adds the fields of `extra` (an object) to `request`.
fn merge(request: &mut Value, extra: Value) {
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            request[k] = v;
        }
    }
}

/// A short critical section on the routing tables (no `.await` inside).
fn lock(routes: &Mutex<Routes>) -> std::sync::MutexGuard<'_, Routes> {
    routes
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn read_loop(
    mut read: tokio::net::unix::OwnedReadHalf,
    routes: Arc<Mutex<Routes>>,
    inbox: mpsc::Sender<Value>,
) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        let value = match frame::decode(&mut buf, usize::MAX) {
            Ok(Some(f)) => match serde_json::from_slice::<Value>(frame::payload(&f)) {
                Ok(v) => v,
                Err(_) => continue,
            },
            Ok(None) => match read.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            },
            Err(_) => break,
        };
        // Waits when the application is behind: the bus's flow control takes over.
        match route(&routes, value) {
            Routed::Answered => {}
            Routed::Stream(tx, value) => {
                let _ = tx.send(value).await;
            }
            Routed::Inbox(value) => {
                let _ = inbox.send(value).await;
            }
        }
    }
    // Ends every stream and every waiting call.
    let mut r = lock(&routes);
    r.streams.clear();
    r.waiting.clear();
}

/// Where one received frame goes.
enum Routed {
    /// To the call that waited for it (done).
    Answered,
    /// To a subscription's stream.
    Stream(mpsc::Sender<Value>, Value),
    /// To [`Bus::recv`].
    Inbox(Value),
}

fn route(routes: &Mutex<Routes>, value: Value) -> Routed {
    let mut r = lock(routes);
    if let Some(rid) = value.get("rid").and_then(Value::as_u64) {
        if let Some(waiter) = r.waiting.remove(&rid) {
            match waiter {
                Waiter::Answer(tx) => {
                    let _ = tx.send(value);
                }
                Waiter::Stream(tx) => {
                    let opened = match StreamId::of(&value) {
                        Some(id) if value["type"] != "error" => {
                            let (stx, srx) = mpsc::channel(STREAM_CAPACITY);
                            r.streams.insert(id.clone(), stx);
                            Ok((id, srx))
                        }
                        _ => Err(value),
                    };
                    let _ = tx.send(opened);
                }
            }
            return Routed::Answered;
        }
    }
    if let Some(id) = StreamId::of(&value) {
        if let Some(tx) = r.streams.get(&id) {
            if tx.is_closed() {
                // Dropped by the application: its `unsubscribe` is on the way.
                r.streams.remove(&id);
                return Routed::Answered;
            }
            return Routed::Stream(tx.clone(), value);
        }
    }
    Routed::Inbox(value)
}
