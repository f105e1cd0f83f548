//! The types of hooks.yaml, and the validated [`HookConfig`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Inline, before delivery, in declared order; may drop or replace.
    Filter,
    /// After routing, off the hot path, through a bounded queue.
    Notify,
}

/// How a command hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One process per message, fed the message JSON on stdin (hermes-bus style).
    Spawn,
    /// One long-lived process speaking JSON lines.
    Worker,
}

/// What a failing hook call (trap, timeout, out of memory, crash) does to the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    #[default]
    Pass,
    Drop,
}

/// `match:` selectors; `type`, `to` and `from` are globs (`*`, `?`) on that
/// field, `subject` a subject pattern (`*` one token, `>` the rest) that only
/// frames with a subject (publishes, requests) can match. Absent matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub to: Option<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
}

impl MatchSpec {
    /// Whether a frame with these fields is selected (`to` is `""` for broadcasts).
    pub fn matches(&self, kind: &str, to: &str, from: &str, subject: Option<&str>) -> bool {
        fn one(pattern: &Option<String>, value: &str) -> bool {
            pattern.as_deref().is_none_or(|p| glob(p, value))
        }
        let subject_ok = match (&self.subject, subject) {
            (None, _) => true,
            (Some(p), Some(s)) => crate::subject::matches(p, s),
            (Some(_), None) => false,
        };
        subject_ok && one(&self.kind, kind) && one(&self.to, to) && one(&self.from, from)
    }
}

/// Glob match with `*` (any run) and `?` (one character).
pub fn glob(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, vi));
            pi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// `limits:`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Per-call deadline (WASM: CPU time through epochs; processes: wall time).
    pub timeout_ms: Option<u64>,
    /// WASM linear memory cap.
    pub memory_mb: Option<u64>,
    /// Spawn mode: processes running at once.
    pub concurrency: Option<usize>,
    /// Spawn mode: runs waiting for a process slot.
    pub backlog: Option<usize>,
    /// Spawn mode: what a full backlog does to a new run.
    pub overflow: Option<Overflow>,
    /// WASM: live instances at once (calls beyond wait for one).
    pub instances: Option<usize>,
}

/// What a spawn hook does with a run its full backlog cannot take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overflow {
    /// Skip the run; counted per hook and logged at most once a second.
    #[default]
    Skip,
    /// Make the sending connection wait until the backlog has room.
    Block,
}

/// A directory made visible to a WASM hook.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// Directory on the host (relative to the config file).
    pub host: PathBuf,
    /// Path the guest sees; defaults to `host`.
    pub guest: Option<String>,
    /// `ro` (default) or `rw`.
    #[serde(default)]
    pub mode: DirMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirMode {
    #[default]
    Ro,
    Rw,
}

/// `grants:`: capabilities beyond the default of none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Preopened directories (WASM).
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Environment variables passed through from the daemon (WASM).
    #[serde(default)]
    pub env: Vec<String>,
    /// Real clocks (WASM: WASI clocks and `now-ms`); on unless set to false, when
    /// they read zero.
    #[serde(default)]
    pub clock: Option<bool>,
    /// Filters may change `to` (rerouting).
    #[serde(default)]
    pub routing: bool,
}

impl Grants {
    /// Whether the guest reads the real time.
    pub fn clock(&self) -> bool {
        self.clock.unwrap_or(true)
    }
}

/// One hook as written in hooks.yaml.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSpec {
    pub name: String,
    /// A `.wasm` component or core module (or `.wat` text).
    pub wasm: Option<PathBuf>,
    /// argv of a subprocess hook, run without a shell.
    pub command: Option<Vec<String>>,
    pub phase: Option<Phase>,
    pub mode: Option<Mode>,
    #[serde(default, rename = "match")]
    pub matcher: MatchSpec,
    /// Given to `init` as JSON.
    pub config: Option<serde_json::Value>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub grants: Grants,
    #[serde(default)]
    pub on_error: OnError,
    /// Extra environment of a subprocess hook.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of a subprocess hook.
    pub cwd: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HooksFile {
    #[serde(default)]
    pub(super) version: Option<u32>,
    #[serde(default)]
    pub(super) hooks: Vec<HookSpec>,
}

/// What a hook runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Runner {
    Wasm(PathBuf),
    Spawn(Vec<String>),
    Worker(Vec<String>),
}

/// A validated hook, paths resolved, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct HookConfig {
    pub name: String,
    pub runner: Runner,
    pub phase: Phase,
    pub matcher: MatchSpec,
    /// JSON text given to `init`.
    pub config: String,
    pub timeout: Duration,
    pub memory_bytes: usize,
    pub concurrency: usize,
    pub backlog: usize,
    pub overflow: Overflow,
    pub instances: usize,
    pub grants: Grants,
    pub on_error: OnError,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
}

impl HookConfig {
    /// Files whose change should reload the hooks.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        match &self.runner {
            Runner::Wasm(path) => vec![path.clone()],
            Runner::Spawn(argv) | Runner::Worker(argv) => argv
                .iter()
                .map(PathBuf::from)
                .filter(|p| p.is_absolute() && p.is_file())
                .collect(),
        }
    }
}
