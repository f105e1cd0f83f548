//! The `hookbus` command line: argument parsing and output live here; everything
//! else is the library's.

mod agents;
mod bench;
mod bench_store;
mod bench_topics;
mod cli;
mod hermes_cli;
mod hooks_cli;
mod jobs_cli;
mod kv_cli;
mod scaffold;
mod streams_cli;
mod topics_cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
