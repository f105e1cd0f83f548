//! hooks.yaml: the schema, strict parsing with line numbers, and where the hook
//! list comes from (env vars, `--hooks`, the XDG config file, hermes-bus's forms).
//!
//! The schema is documented in docs/HOOKS.md and hooks/hooks.example.yaml.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Env var naming the hooks: comma-separated paths or a JSON array; `none` or empty
/// disables hooks.
pub const HOOKS_ENV: &str = "HOOKBUS_HOOKS";
/// hermes-bus's env var, honoured when [`HOOKS_ENV`] is unset.
pub const HERMES_HOOKS_ENV: &str = "HERMES_BUS_HOOKS";

/// Default CPU deadline of a WASM or worker filter call.
pub const DEFAULT_FILTER_TIMEOUT: Duration = Duration::from_millis(5);
/// Default CPU deadline of a WASM notify call.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_millis(100);
/// Default time a subprocess has to answer (worker) or finish (spawn).
pub const DEFAULT_PROCESS_TIMEOUT: Duration = Duration::from_secs(5);
/// Default memory cap of a WASM hook instance.
pub const DEFAULT_MEMORY_MB: u64 = 32;
/// Default number of concurrent processes of a spawn hook.
pub const DEFAULT_SPAWN_CONCURRENCY: usize = 8;

/// A config that cannot be used; says where and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

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

/// `match:` selectors; each is a glob (`*`, `?`) on that field. Absent matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub to: Option<String>,
    pub from: Option<String>,
}

impl MatchSpec {
    /// Whether a message with these fields is selected (`to` is `""` for broadcasts).
    pub fn matches(&self, kind: &str, to: &str, from: &str) -> bool {
        fn one(pattern: &Option<String>, value: &str) -> bool {
            pattern.as_deref().is_none_or(|p| glob(p, value))
        }
        one(&self.kind, kind) && one(&self.to, to) && one(&self.from, from)
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
    /// Real WASI clocks (WASM); without it the guest's WASI clocks read zero.
    #[serde(default)]
    pub clock: bool,
    /// Filters may change `to` (rerouting).
    #[serde(default)]
    pub routing: bool,
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
struct HooksFile {
    #[serde(default)]
    version: Option<u32>,
    #[serde(default)]
    hooks: Vec<HookSpec>,
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

/// Where the hook list came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookSource {
    /// Hooks disabled (`none` or empty env var, or no config file).
    None { why: String },
    /// An env var listing paths.
    Env { var: &'static str, value: String },
    /// A hooks.yaml file.
    File(PathBuf),
}

impl std::fmt::Display for HookSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookSource::None { why } => write!(f, "no hooks ({why})"),
            HookSource::Env { var, .. } => write!(f, "${var}"),
            HookSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Resolves where hooks come from: `HOOKBUS_HOOKS`, then `HERMES_BUS_HOOKS`, then
/// `--hooks FILE`, then `$XDG_CONFIG_HOME/hookbus/hooks.yaml`.
pub fn resolve_source(flag: Option<&Path>) -> HookSource {
    resolve_source_from(flag, |k| std::env::var(k).ok())
}

fn resolve_source_from(flag: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> HookSource {
    for var in [HOOKS_ENV, HERMES_HOOKS_ENV] {
        if let Some(value) = env(var) {
            let trimmed = value.trim();
            if trimmed.is_empty() || trimmed.eq_ignore_ascii_case("none") {
                return HookSource::None {
                    why: format!("{var}={value:?}"),
                };
            }
            return HookSource::Env { var, value };
        }
    }
    if let Some(flag) = flag {
        return HookSource::File(flag.to_owned());
    }
    let config_home = env("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".config")));
    match config_home.map(|d| d.join("hookbus").join("hooks.yaml")) {
        Some(path) if path.exists() => HookSource::File(path),
        Some(path) => HookSource::None {
            why: format!("{} does not exist", path.display()),
        },
        None => HookSource::None {
            why: "no config directory".into(),
        },
    }
}

/// Loads and validates the hooks of `source`.
pub fn load(source: &HookSource) -> Result<Vec<HookConfig>, ConfigError> {
    match source {
        HookSource::None { .. } => Ok(Vec::new()),
        HookSource::Env { var, value } => {
            let origin = PathBuf::from(format!("${var}"));
            let paths = parse_env_list(value).map_err(|message| ConfigError {
                file: origin.clone(),
                line: None,
                message,
            })?;
            let cwd = std::env::current_dir().unwrap_or_default();
            let mut hooks = Vec::new();
            for path in paths {
                let path = expand_home(&path);
                if path.ends_with(".yaml") || path.ends_with(".yml") {
                    hooks.extend(load(&HookSource::File(PathBuf::from(&path)))?);
                } else {
                    hooks.push(bare_path_hook(&path, &cwd, &origin)?);
                }
            }
            check_unique(&hooks, &origin, None)?;
            Ok(hooks)
        }
        HookSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                file: path.clone(),
                line: None,
                message: format!("cannot read: {e}"),
            })?;
            parse_file(&text, path)
        }
    }
}

/// Parses `HOOKBUS_HOOKS`-style values: a JSON array or a comma-separated list.
fn parse_env_list(value: &str) -> Result<Vec<String>, String> {
    let trimmed = value.trim();
    if trimmed.starts_with('[') {
        return serde_json::from_str::<Vec<String>>(trimmed)
            .map_err(|e| format!("not a JSON array of paths: {e}"));
    }
    Ok(trimmed
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect())
}

fn expand_home(path: &str) -> String {
    match (path.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) => format!("{home}/{rest}"),
        _ => path.to_owned(),
    }
}

/// A hook given as a bare path (env var or hermes-style list): `.wasm`/`.wat` is a
/// WASM filter; `.py` runs with `python3`; anything else is run directly. Commands
/// are hermes-style: a notify hook spawned once per message.
fn bare_path_hook(path: &str, base: &Path, origin: &Path) -> Result<HookConfig, ConfigError> {
    let resolved = base.join(path);
    let name = resolved
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_owned());
    let spec = if path.ends_with(".wasm") || path.ends_with(".wat") {
        HookSpec::wasm(&name, resolved)
    } else {
        let mut argv = vec![resolved.to_string_lossy().into_owned()];
        if path.ends_with(".py") {
            argv.insert(0, "python3".into());
        }
        HookSpec::command(&name, argv)
    };
    validate(spec, base, origin, None)
}

impl HookSpec {
    fn wasm(name: &str, path: PathBuf) -> Self {
        Self::blank(name, Some(path), None)
    }

    fn command(name: &str, argv: Vec<String>) -> Self {
        Self::blank(name, None, Some(argv))
    }

    fn blank(name: &str, wasm: Option<PathBuf>, command: Option<Vec<String>>) -> Self {
        Self {
            name: name.to_owned(),
            wasm,
            command,
            phase: None,
            mode: None,
            matcher: MatchSpec::default(),
            config: None,
            limits: Limits::default(),
            grants: Grants::default(),
            on_error: OnError::default(),
            env: BTreeMap::new(),
            cwd: None,
        }
    }
}

/// Parses hooks.yaml text (`path` names it in errors and anchors relative paths).
pub fn parse_file(text: &str, path: &Path) -> Result<Vec<HookConfig>, ConfigError> {
    let base = path.parent().map(Path::to_owned).unwrap_or_default();
    let err = |line: Option<usize>, message: String| ConfigError {
        file: path.to_owned(),
        line,
        message,
    };
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| yaml_error(path, e))?;
    // hermes-bus's hooks.yaml: a bare list of script paths.
    if let serde_yaml_ng::Value::Sequence(items) = &value {
        let mut hooks = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(script) = item.as_str() else {
                return Err(err(
                    None,
                    format!("item {} of the hook list must be a path", i + 1),
                ));
            };
            hooks.push(bare_path_hook(&expand_home(script), &base, path)?);
        }
        check_unique(&hooks, path, Some(text))?;
        return Ok(hooks);
    }
    if value.is_null() {
        return Ok(Vec::new());
    }
    let file: HooksFile = serde_yaml_ng::from_str(text).map_err(|e| yaml_error(path, e))?;
    if let Some(v) = file.version.filter(|&v| v != 1) {
        return Err(err(
            line_of(text, "version:"),
            format!("unsupported version {v}; this hookbus reads version 1"),
        ));
    }
    let mut hooks = Vec::new();
    for spec in file.hooks {
        let line = line_of(text, &format!("name: {}", spec.name));
        hooks.push(validate(spec, &base, path, line)?);
    }
    check_unique(&hooks, path, Some(text))?;
    Ok(hooks)
}

fn yaml_error(path: &Path, e: serde_yaml_ng::Error) -> ConfigError {
    ConfigError {
        file: path.to_owned(),
        line: e.location().map(|l| l.line()),
        message: e.to_string(),
    }
}

/// First line (1-based) containing `needle`.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

fn check_unique(
    hooks: &[HookConfig],
    source: &Path,
    text: Option<&str>,
) -> Result<(), ConfigError> {
    for (i, hook) in hooks.iter().enumerate() {
        if hooks[..i].iter().any(|h| h.name == hook.name) {
            return Err(ConfigError {
                file: source.to_owned(),
                line: text.and_then(|t| line_of(t, &format!("name: {}", hook.name))),
                message: format!("two hooks are named `{}`; names must be unique", hook.name),
            });
        }
    }
    Ok(())
}

fn validate(
    spec: HookSpec,
    base: &Path,
    source: &Path,
    line: Option<usize>,
) -> Result<HookConfig, ConfigError> {
    let name = spec.name.clone();
    let fail = |message: String| ConfigError {
        file: source.to_owned(),
        line,
        message: format!("hook `{name}`: {message}"),
    };
    if spec.name.trim().is_empty() {
        return Err(fail("`name` must not be empty".into()));
    }
    let runner = match (&spec.wasm, &spec.command) {
        (Some(_), Some(_)) => return Err(fail("give either `wasm` or `command`, not both".into())),
        (None, None) => {
            return Err(fail(
                "give `wasm: FILE` or `command: [PROGRAM, ARG…]`".into(),
            ))
        }
        (Some(path), None) => {
            if spec.mode.is_some() {
                return Err(fail("`mode` applies to `command` hooks only".into()));
            }
            if !spec.env.is_empty() || spec.cwd.is_some() {
                return Err(fail(
                    "`env` and `cwd` apply to `command` hooks; grant env vars with `grants.env`"
                        .into(),
                ));
            }
            Runner::Wasm(base.join(path))
        }
        (None, Some(argv)) => {
            if argv.is_empty() || argv[0].is_empty() {
                return Err(fail("`command` must name a program".into()));
            }
            if !spec.grants.dirs.is_empty() || !spec.grants.env.is_empty() || spec.grants.clock {
                return Err(fail(
                    "`grants.dirs`, `grants.env` and `grants.clock` apply to `wasm` hooks; \
                    a command runs with the daemon's rights, set its `env` and `cwd` instead"
                        .into(),
                ));
            }
            let mut argv = argv.clone();
            // A relative program path that exists beside the config runs from there.
            if argv[0].contains('/') && Path::new(&argv[0]).is_relative() {
                argv[0] = base.join(&argv[0]).to_string_lossy().into_owned();
            }
            match spec.mode.unwrap_or(Mode::Spawn) {
                Mode::Spawn => Runner::Spawn(argv),
                Mode::Worker => Runner::Worker(argv),
            }
        }
    };
    let phase = spec.phase.unwrap_or(match runner {
        Runner::Spawn(_) => Phase::Notify,
        _ => Phase::Filter,
    });
    if phase == Phase::Filter && matches!(runner, Runner::Spawn(_)) {
        return Err(fail(
            "a `spawn` command cannot be a filter (it would block routing); \
            use `mode: worker` or `phase: notify`"
                .into(),
        ));
    }
    let timeout = match (spec.limits.timeout_ms, &runner, phase) {
        (Some(0), ..) => return Err(fail("`limits.timeout_ms` must be at least 1".into())),
        (Some(ms), ..) => Duration::from_millis(ms),
        (None, Runner::Wasm(_), Phase::Filter) => DEFAULT_FILTER_TIMEOUT,
        (None, Runner::Wasm(_), Phase::Notify) => DEFAULT_NOTIFY_TIMEOUT,
        (None, ..) => DEFAULT_PROCESS_TIMEOUT,
    };
    let memory_mb = spec.limits.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
    if memory_mb == 0 || memory_mb > 4096 {
        return Err(fail("`limits.memory_mb` must be between 1 and 4096".into()));
    }
    let concurrency = spec.limits.concurrency.unwrap_or(DEFAULT_SPAWN_CONCURRENCY);
    if concurrency == 0 {
        return Err(fail("`limits.concurrency` must be at least 1".into()));
    }
    let config = match &spec.config {
        None => "{}".to_owned(),
        Some(value) => value.to_string(),
    };
    let mut grants = spec.grants.clone();
    for dir in &mut grants.dirs {
        dir.host = base.join(&dir.host);
    }
    Ok(HookConfig {
        name: spec.name,
        runner,
        phase,
        matcher: spec.matcher,
        config,
        timeout,
        memory_bytes: (memory_mb as usize) << 20,
        concurrency,
        grants,
        on_error: spec.on_error,
        env: spec.env,
        // Commands run in the config file's directory unless told otherwise, so
        // relative paths in `command` mean what they say.
        cwd: match spec.cwd {
            Some(cwd) => Some(base.join(cwd)),
            None if !base.as_os_str().is_empty() => Some(base.to_owned()),
            None => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<HookConfig>, ConfigError> {
        parse_file(text, Path::new("/etc/hb/hooks.yaml"))
    }

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("agent-*", "agent-7"));
        assert!(!glob("agent-*", "agen"));
        assert!(glob("a?c", "abc"));
        assert!(glob("*.log*", "x.log.1"));
        assert!(!glob("a*b", "acbx"));
        assert!(glob("", ""));
        assert!(!glob("", "x"));
    }

    #[test]
    fn full_schema_with_defaults_and_relative_paths() {
        let hooks = parse(
            r#"
version: 1
hooks:
  - name: redact
    wasm: redact.wasm
    match: { type: message, to: "agent-*" }
    config: { patterns: ["sk-[a-z]+"] }
    limits: { timeout_ms: 3, memory_mb: 16 }
    grants:
      dirs: [{ host: data, guest: /data }]
      env: [HOME]
      routing: true
    on_error: drop
  - name: notify
    command: [./notify.sh, --quiet]
    env: { A: "1" }
  - name: worker
    command: [python3, w.py]
    mode: worker
"#,
        )
        .unwrap();
        assert_eq!(hooks.len(), 3);
        let r = &hooks[0];
        assert_eq!(r.runner, Runner::Wasm("/etc/hb/redact.wasm".into()));
        assert_eq!(r.phase, Phase::Filter);
        assert_eq!(r.timeout, Duration::from_millis(3));
        assert_eq!(r.memory_bytes, 16 << 20);
        assert_eq!(r.on_error, OnError::Drop);
        assert_eq!(r.config, r#"{"patterns":["sk-[a-z]+"]}"#);
        assert_eq!(r.grants.dirs[0].host, Path::new("/etc/hb/data"));
        assert!(r.matcher.matches("message", "agent-1", "x"));
        assert!(!r.matcher.matches("message", "human", "x"));
        assert_eq!(
            hooks[1].runner,
            Runner::Spawn(vec!["/etc/hb/./notify.sh".into(), "--quiet".into()])
        );
        assert_eq!(hooks[1].phase, Phase::Notify);
        assert_eq!(hooks[1].timeout, DEFAULT_PROCESS_TIMEOUT);
        assert_eq!(
            hooks[2].runner,
            Runner::Worker(vec!["python3".into(), "w.py".into()])
        );
        assert_eq!(hooks[2].phase, Phase::Filter);
    }

    #[test]
    fn unknown_keys_name_their_line() {
        let e = parse("hooks:\n  - name: a\n    wasm: a.wasm\n    phsae: filter\n").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("phsae"), "{e}");
        assert!(e.to_string().starts_with("/etc/hb/hooks.yaml:4:"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_hook_and_line() {
        let e = parse("hooks:\n  - name: ok\n    wasm: a.wasm\n  - name: bad\n    command: [x]\n    phase: filter\n")
            .unwrap_err();
        assert_eq!(e.line, Some(4));
        assert!(
            e.message.contains("`bad`") && e.message.contains("worker"),
            "{e}"
        );
        let e = parse("hooks:\n  - name: a\n    wasm: a.wasm\n  - name: a\n    wasm: b.wasm\n")
            .unwrap_err();
        assert!(e.message.contains("unique"), "{e}");
        let e = parse("hooks:\n  - name: a\n").unwrap_err();
        assert!(e.message.contains("`wasm: FILE`"), "{e}");
        let e = parse("hooks:\n  - name: a\n    wasm: a.wasm\n    mode: worker\n").unwrap_err();
        assert!(e.message.contains("`mode`"), "{e}");
        let e = parse("hooks:\n  - name: a\n    command: [x]\n    grants: { clock: true }\n")
            .unwrap_err();
        assert!(e.message.contains("grants"), "{e}");
        let e = parse("version: 2\nhooks: []\n").unwrap_err();
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn hermes_bare_list() {
        let hooks =
            parse("# hermes style\n- /opt/hooks/notify.py\n- hooks/guard.wasm\n- ./run.sh\n")
                .unwrap();
        assert_eq!(
            hooks[0].runner,
            Runner::Spawn(vec!["python3".into(), "/opt/hooks/notify.py".into()])
        );
        assert_eq!(hooks[0].phase, Phase::Notify);
        assert_eq!(hooks[0].name, "notify");
        assert_eq!(
            hooks[1].runner,
            Runner::Wasm("/etc/hb/hooks/guard.wasm".into())
        );
        assert_eq!(hooks[1].phase, Phase::Filter);
        assert_eq!(
            hooks[2].runner,
            Runner::Spawn(vec!["/etc/hb/./run.sh".into()])
        );
    }

    #[test]
    fn empty_file_means_no_hooks() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# nothing\n").unwrap().is_empty());
        assert!(parse("hooks: []\n").unwrap().is_empty());
    }

    #[test]
    fn source_resolution_order() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let flag = Path::new("/f/hooks.yaml");
        assert_eq!(
            resolve_source_from(
                Some(flag),
                env(&[("HOOKBUS_HOOKS", "a.wasm"), ("HERMES_BUS_HOOKS", "b.py")])
            ),
            HookSource::Env {
                var: HOOKS_ENV,
                value: "a.wasm".into()
            }
        );
        assert_eq!(
            resolve_source_from(Some(flag), env(&[("HERMES_BUS_HOOKS", "b.py")])),
            HookSource::Env {
                var: HERMES_HOOKS_ENV,
                value: "b.py".into()
            }
        );
        assert!(matches!(
            resolve_source_from(
                Some(flag),
                env(&[("HOOKBUS_HOOKS", "none"), ("HERMES_BUS_HOOKS", "b.py")])
            ),
            HookSource::None { .. }
        ));
        assert!(matches!(
            resolve_source_from(Some(flag), env(&[("HOOKBUS_HOOKS", "")])),
            HookSource::None { .. }
        ));
        assert_eq!(
            resolve_source_from(Some(flag), env(&[])),
            HookSource::File(flag.to_owned())
        );
        assert!(matches!(
            resolve_source_from(None, env(&[("XDG_CONFIG_HOME", "/nonexistent")])),
            HookSource::None { .. }
        ));
    }

    #[test]
    fn env_lists() {
        assert_eq!(
            parse_env_list("a.wasm, b.py,,c").unwrap(),
            vec!["a.wasm", "b.py", "c"]
        );
        assert_eq!(
            parse_env_list(r#"["a b.wasm","c"]"#).unwrap(),
            vec!["a b.wasm", "c"]
        );
        assert!(parse_env_list("[oops").is_err());
        let hooks = load(&HookSource::Env {
            var: HOOKS_ENV,
            value: r#"["/x/f.wasm","/x/n.py"]"#.into(),
        })
        .unwrap();
        assert_eq!(hooks[0].runner, Runner::Wasm("/x/f.wasm".into()));
        assert_eq!(
            hooks[1].runner,
            Runner::Spawn(vec!["python3".into(), "/x/n.py".into()])
        );
    }
}
