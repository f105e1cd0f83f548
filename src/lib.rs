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
//!    each into a [`protocol::Request`] — bad frames become error requests, so
//!    the connection carries on.
//! 3. When filter hooks are in force, the batch first goes to a filter shard
//!    thread ([`hooks::runtime`], one per core, chosen by connection so each
//!    sender's order holds), which runs the filter chain ([`hooks`]) on each message.
//! 4. The [`router`] actor receives each read's requests as one batch. It owns
//!    the endpoint map and sessions, answers control requests and routes messages
//!    point-to-point or as broadcasts, then queues them for notify hooks. Messages
//!    hooks emit come back to it as new messages.
//! 5. Routed frames are pushed, without waiting, into each recipient's
//!    [`outbox`]; a full outbox disconnects that slow consumer.
//! 6. [`connection`]'s writer drains the outbox back into the socket.
//!
//! Around the bus: [`daemon`] runs the server in the foreground or detached (pid
//! file, log file, socket permissions), [`paths`] finds the default socket,
//! [`client`] is the async Rust client, [`bench`] the load generator behind
//! `hookbus bench`, and [`cli`] / [`hooks_cli`] the `hookbus` command line.
//!
//! The wire protocol is specified in `docs/PROTOCOL.md`.

pub mod bench;
pub mod cli;
pub mod client;
pub mod connection;
pub mod daemon;
pub mod frame;
pub mod hooks;
pub mod hooks_cli;
pub mod outbox;
pub mod paths;
pub mod protocol;
pub mod router;
pub mod server;
