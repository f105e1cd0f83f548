//! Integration tests: a real server on a temp socket, spoken to with raw frames,
//! through the Rust client, through the `hookbus` binary and through the Python
//! hermes-bus 0.7.0 client. One test binary, so the crate links once.

mod common;

mod agents;
mod client;
mod consumers;
mod daemon;
mod flow;
mod guests;
mod hermes;
mod hooks;
mod isolation;
mod jobs;
mod kv;
mod limits;
mod memory;
mod notices;
mod protocol;
mod python_client;
mod reactors;
mod robustness;
mod rpc;
mod streams;
mod topics;
mod topics_cli;
