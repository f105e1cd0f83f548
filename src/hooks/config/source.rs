//! Where the hook list comes from, and loading it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::validate::{check_unique, parse_file, validate};
use super::*;

/// Where the hook list came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookSource {
    /// Hooks disabled (`none` or empty env var, or no config file).
    None { why: String },
    /// An env var listing paths.
    Env { var: &'static str, value: String },
    /// A hooks.yaml file named on the command line: it must exist.
    File(PathBuf),
    /// The default hooks.yaml: while it does not exist, there are no hooks, and it
    /// is watched for.
    Default(PathBuf),
}

impl HookSource {
    /// The config file, if the hooks come from one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            HookSource::File(path) | HookSource::Default(path) => Some(path),
            _ => None,
        }
    }

    /// The text the hooks are read from, to tell whether it changed while a set
    /// was being built (`None`: no file, or it cannot be read).
    pub fn snapshot(&self) -> Option<Vec<u8>> {
        match self {
            HookSource::Env { value, .. } => Some(value.as_bytes().to_vec()),
            HookSource::File(path) | HookSource::Default(path) => std::fs::read(path).ok(),
            HookSource::None { .. } => None,
        }
    }
}

impl std::fmt::Display for HookSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookSource::None { why } => write!(f, "no hooks ({why})"),
            HookSource::Env { var, .. } => write!(f, "${var}"),
            HookSource::File(path) => write!(f, "{}", path.display()),
            HookSource::Default(path) if path.exists() => write!(f, "{}", path.display()),
            HookSource::Default(path) => write!(f, "{} (not there yet)", path.display()),
        }
    }
}

/// Resolves where hooks come from: `HOOKBUS_HOOKS`, then `HERMES_BUS_HOOKS`, then
/// `--hooks FILE`, then `$XDG_CONFIG_HOME/hookbus/hooks.yaml` (or, for a drop-in
/// for hermes-bus, `hermes_default`: its `$HERMES_HOME/hermes-bus/hooks.yaml`).
pub fn resolve_source(flag: Option<&Path>, hermes_default: Option<&Path>) -> HookSource {
    resolve_source_from(flag, |k| std::env::var(k).ok(), hermes_default)
}

pub(super) fn resolve_source_from(
    flag: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
    hermes_default: Option<&Path>,
) -> HookSource {
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
        return HookSource::File(absolute(flag));
    }
    if let Some(file) = hermes_default {
        return HookSource::Default(absolute(file));
    }
    let config_home = env("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".config")));
    match config_home {
        Some(dir) => HookSource::Default(absolute(&dir.join("hookbus").join("hooks.yaml"))),
        None => HookSource::None {
            why: "neither XDG_CONFIG_HOME nor HOME is set".into(),
        },
    }
}

/// `path` made absolute against the current directory, so errors and watches
/// name the real file.
pub fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_owned();
    }
    std::env::current_dir().unwrap_or_default().join(path)
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
                    hooks.extend(load(&HookSource::File(absolute(Path::new(&path))))?);
                } else {
                    hooks.push(bare_path_hook(&path, &cwd, &origin)?);
                }
            }
            check_unique(&hooks, &origin, None)?;
            Ok(hooks)
        }
        HookSource::Default(path) if !path.exists() => Ok(Vec::new()),
        HookSource::File(path) | HookSource::Default(path) => {
            let path = &absolute(path);
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
pub(super) fn parse_env_list(value: &str) -> Result<Vec<String>, String> {
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

pub(super) fn expand_home(path: &str) -> String {
    match (path.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) => format!("{home}/{rest}"),
        _ => path.to_owned(),
    }
}

/// A hook given as a bare path (env var or hermes-style list): `.wasm`/`.wat` is a
/// WASM filter; `.py` runs with `python3`; anything else is run directly. Commands
/// are hermes-style: a notify hook spawned once per message.
pub(super) fn bare_path_hook(
    path: &str,
    base: &Path,
    origin: &Path,
) -> Result<HookConfig, ConfigError> {
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
