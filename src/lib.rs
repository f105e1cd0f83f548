//! hookbus: a message bus for a developer's workstation, wire-compatible with the
//! Python `hermes-bus` 0.7 package.
//!
//! # Layout
//!
//! A message takes this path, and the modules read in the same order:
//!
//! 1. [`server`] accepts a connection on the Unix socket, checks the peer's uid
//!    and starts a [`connection`].
//! 2. [`connection`]'s reader cuts bytes into frames with [`frame`] and parses
//!    each into a [`protocol::Request`] (its envelope read once, then its
//!    fields by its type's module, found in one table of request types; a
//!    publish keeps them as ranges of its frame) — bad frames become error
//!    requests, so the
//!    connection carries on. One read's requests travel on as one batch (at
//!    most [`connection::MAX_READ_BATCH`]).
//! 3. When filter hooks are in force, the reader runs the filter chain
//!    ([`hooks`]) on the batch, on its own task, so each sender's order holds; a
//!    message, publish or request a filter drops goes on as
//!    [`protocol::Op::Dropped`].
//! 4. The [`router`] actor receives each batch. It owns the endpoint map,
//!    sessions and subscriptions, answers control requests and routes messages
//!    point-to-point or as broadcasts, publishes to the subscriptions their
//!    [`subject`] matches, requests to their responders (with one heap of
//!    deadlines), and a copy of each to monitors; then it queues them for notify
//!    hooks. Messages hooks emit come back to it through the engine's emit port as
//!    new messages. Persistent requests (KV writes) go on to the [`store`] actor,
//!    which commits them in groups on its own thread and hands back the outcomes
//!    and changes, which the router applies, tells watchers and answers.
//! 5. Routed frames are pushed, without waiting, into each recipient's
//!    [`outbox`]. An outbox past its high-water mark holds back the senders that
//!    filled it ([`flow`]): their readers pause until it drains. A recipient that
//!    stops reading is disconnected as a slow consumer after a timeout. The
//!    bytes of frames being read, on their way and queued all count against one
//!    memory [`budget`]; while it is spent, readers pause.
//! 6. [`connection`]'s writer drains the outbox back into the socket. A frame
//!    for a client with nothing queued and no write in progress is written by
//!    the router itself, the first of each turn ([`outbox::Outbox::send`]).
//!
//! The daemon runs all of this on one thread by default; after traffic it polls
//! its sockets for a short window instead of sleeping at once ([`spin`]).
//!
//! Around the bus: [`daemon`] runs the server in the foreground or detached (pid
//! file, log file, socket permissions, bounded stop), [`fd_limit`] keeps clients
//! answered when descriptors run out, [`paths`] finds the default
//! socket and [`client`] holds the async Rust clients (`Client` for endpoints,
//! `Bus` for protocol 2). The `hookbus` command line is
//! the binary's (`src/main.rs`), not part of this library.
//!
//! The wire protocol is specified in `docs/PROTOCOL.md`.

pub mod budget;
pub mod client;
pub mod connection;
pub mod daemon;
pub mod fd_limit;
pub mod flow;
pub mod frame;
pub mod hooks;
pub mod outbox;
pub mod paths;
pub mod peer;
pub mod protocol;
pub mod router;
pub mod server;
pub mod spin;
pub mod store;
pub mod subject;
