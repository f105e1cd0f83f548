//! `redact`: a hookbus filter hook that masks secrets in message bodies.
//!
//! Every string in a message's `body` is checked against the built-in detectors (API
//! keys, JWTs, bearer/basic credentials, private-key blocks) and the config's own
//! `patterns`; values under sensitive keys (`password`, `token`, …) are masked whole.
//! A message with nothing to mask passes untouched; one with secrets is replaced by the
//! masked copy, every other field and the key order kept.
//!
//! Most messages hold no secret, so the hot path is one scan of the raw JSON text with
//! a single combined regex (`Redactor::screen`); only a hit parses the message.

use std::borrow::Cow;
use std::cell::RefCell;

use regex::{Regex, RegexSet};
use serde_json::{Map, Value};

wit_bindgen::generate!({ world: "hook", path: "../../wit" });

use hookbus::hook::host::{log, Level};

/// Built-in detectors: (config name, kind shown in the mask, patterns). Patterns use
/// ASCII word boundaries so the regex engine's fast DFA applies to any input.
const BUILTINS: &[(&str, &str, &[&str])] = &[
    (
        "api_keys",
        "api_key",
        &[
            // OpenAI / Anthropic style: sk-…, sk-proj-…, sk-ant-…
            r"(?-u:\b)sk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}",
            // AWS access key ids
            r"(?-u:\b)(?:AKIA|ASIA)[0-9A-Z]{16}(?-u:\b)",
            // GitHub tokens
            r"(?-u:\b)gh[pousr]_[A-Za-z0-9]{36,}",
            r"(?-u:\b)github_pat_[A-Za-z0-9_]{22,}",
            // GitLab personal access tokens
            r"(?-u:\b)glpat-[A-Za-z0-9_-]{20,}",
            // Slack tokens
            r"(?-u:\b)xox[abposr]-[A-Za-z0-9-]{10,}",
            // Google API keys
            r"(?-u:\b)AIza[0-9A-Za-z_-]{35}",
            // Stripe secret and restricted keys
            r"(?-u:\b)[rs]k_(?:live|test)_[0-9A-Za-z]{16,}",
        ],
    ),
    (
        "jwt",
        "jwt",
        &[r"(?-u:\b)eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"],
    ),
    (
        // The credential after an HTTP auth scheme; the scheme itself is kept.
        "bearer",
        "bearer",
        &[r"(?i)(?-u:\b)(?P<scheme>bearer|basic|token)\s+(?P<secret>[A-Za-z0-9._~+/-]{8,}=*)"],
    ),
    (
        // A PEM private key block, or its start when the end is cut off.
        "private_keys",
        "private_key",
        &[
            r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)",
        ],
    ),
];

const DEFAULT_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "api_key",
    "apikey",
    "authorization",
    "private_key",
];

const DEFAULT_MASK: &str = "[REDACTED]";

/// One way to find a secret inside a string.
struct Detector {
    kind: String,
    regex: Regex,
    /// Mask only the `secret` capture group (the rest of the match is kept).
    group: bool,
}

struct Redactor {
    /// Matches the raw message text when any detector or sensitive key might apply.
    screen: RegexSet,
    detectors: Vec<Detector>,
    /// Lower-case key names whose values are masked whole.
    keys: Vec<String>,
    /// The mask; `{kind}` in it is replaced by the detector's kind.
    mask: String,
}

thread_local! {
    static REDACTOR: RefCell<Option<Redactor>> = const { RefCell::new(None) };
}

struct Redact;

impl Guest for Redact {
    fn init(config: String) -> Result<(), String> {
        let redactor = Redactor::from_config(&config)?;
        log(
            Level::Info,
            &format!(
                "redact: {} detectors, {} sensitive keys",
                redactor.detectors.len(),
                redactor.keys.len()
            ),
        );
        REDACTOR.with(|r| *r.borrow_mut() = Some(redactor));
        Ok(())
    }

    fn handle(msg: Message) -> Verdict {
        REDACTOR.with(|r| match r.borrow().as_ref() {
            Some(redactor) => redactor.handle(&msg.json),
            None => Verdict::Pass,
        })
    }
}

export!(Redact);

impl Redactor {
    fn from_config(text: &str) -> Result<Self, String> {
        let config: Map<String, Value> =
            serde_json::from_str(text).map_err(|e| format!("config: {e}"))?;
        for key in config.keys() {
            if !["builtin", "keys", "patterns", "mask"].contains(&key.as_str()) {
                return Err(format!(
                    "config: unknown key `{key}` (expected builtin, keys, patterns, mask)"
                ));
            }
        }

        let builtin = match config.get("builtin") {
            None => BUILTINS.iter().map(|b| b.0.to_string()).collect(),
            Some(v) => strings(v, "builtin")?,
        };
        let mut detectors = Vec::new();
        for name in &builtin {
            let Some((_, kind, patterns)) = BUILTINS.iter().find(|b| b.0 == name) else {
                let known: Vec<_> = BUILTINS.iter().map(|b| b.0).collect();
                return Err(format!(
                    "config: builtin: unknown detector `{name}` (known: {})",
                    known.join(", ")
                ));
            };
            for pattern in *patterns {
                detectors.push(Detector::new(kind, pattern).expect("built-in patterns compile"));
            }
        }
        if let Some(v) = config.get("patterns") {
            for (i, pattern) in strings(v, "patterns")?.iter().enumerate() {
                let detector = Detector::new("pattern", pattern)
                    .map_err(|e| format!("config: patterns[{i}]: {e}"))?;
                detectors.push(detector);
            }
        }

        let keys = match config.get("keys") {
            None => DEFAULT_KEYS.iter().map(|k| k.to_string()).collect(),
            Some(v) => strings(v, "keys")?,
        };
        let keys: Vec<String> = keys.iter().map(|k| k.to_lowercase()).collect();

        let mask = match config.get("mask") {
            None => DEFAULT_MASK.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err("config: mask: expected a string".into()),
        };

        // The screen: any detector, a sensitive key, or a \u escape (which could hide
        // either from a scan of the raw text; such messages take the full path).
        let mut alternatives: Vec<String> = detectors
            .iter()
            .map(|d| d.regex.as_str().to_string())
            .collect();
        if !keys.is_empty() {
            let names: Vec<String> = keys.iter().map(|k| regex::escape(k)).collect();
            alternatives.push(format!(r#"(?i)"(?:{})"\s*:"#, names.join("|")));
        }
        alternatives.push(r"\\u".to_string());
        let screen = RegexSet::new(&alternatives).map_err(|e| format!("config: {e}"))?;

        Ok(Redactor {
            screen,
            detectors,
            keys,
            mask,
        })
    }

    fn handle(&self, json: &str) -> Verdict {
        if !self.screen.is_match(json) {
            return Verdict::Pass;
        }
        let Ok(mut message) = serde_json::from_str::<Map<String, Value>>(json) else {
            return Verdict::Pass; // the bus only routes JSON objects; nothing to do
        };
        let Some(body) = message.get_mut("body") else {
            return Verdict::Pass;
        };
        let masked = self.redact_value(body);
        if masked == 0 {
            return Verdict::Pass;
        }
        log(Level::Debug, &format!("masked {masked} secret(s)"));
        Verdict::Replace(Value::Object(message).to_string())
    }

    /// Masks secrets in `value` in place; returns how many were masked.
    fn redact_value(&self, value: &mut Value) -> usize {
        match value {
            Value::String(s) => match self.redact_str(s) {
                (Cow::Owned(masked), n) => {
                    *s = masked;
                    n
                }
                (Cow::Borrowed(_), _) => 0,
            },
            Value::Array(items) => items.iter_mut().map(|v| self.redact_value(v)).sum(),
            Value::Object(fields) => {
                let mut n = 0;
                for (key, v) in fields.iter_mut() {
                    let sensitive = matches!(v, Value::String(_) | Value::Number(_))
                        && self.keys.iter().any(|k| k.eq_ignore_ascii_case(key));
                    if sensitive {
                        *v = Value::String(self.mask_for("key"));
                        n += 1;
                    } else {
                        n += self.redact_value(v);
                    }
                }
                n
            }
            _ => 0,
        }
    }

    fn redact_str<'a>(&self, text: &'a str) -> (Cow<'a, str>, usize) {
        let mut out = Cow::Borrowed(text);
        let mut count = 0;
        for d in &self.detectors {
            if !d.regex.is_match(&out) {
                continue;
            }
            let mask = self.mask_for(&d.kind);
            let replaced = d.regex.replace_all(&out, |caps: &regex::Captures| {
                count += 1;
                match (d.group, caps.name("secret")) {
                    (true, Some(secret)) => {
                        let whole = caps.get(0).expect("group 0 always matches");
                        let text = whole.as_str();
                        let (start, end) =
                            (secret.start() - whole.start(), secret.end() - whole.start());
                        format!("{}{mask}{}", &text[..start], &text[end..])
                    }
                    _ => mask.clone(),
                }
            });
            out = Cow::Owned(replaced.into_owned());
        }
        (out, count)
    }

    fn mask_for(&self, kind: &str) -> String {
        self.mask.replace("{kind}", kind)
    }
}

impl Detector {
    fn new(kind: &str, pattern: &str) -> Result<Self, regex::Error> {
        let regex = Regex::new(pattern)?;
        let group = regex.capture_names().flatten().any(|n| n == "secret");
        Ok(Detector {
            kind: kind.to_string(),
            regex,
            group,
        })
    }
}

/// A config value that must be a list of strings.
fn strings(value: &Value, key: &str) -> Result<Vec<String>, String> {
    let items = value
        .as_array()
        .ok_or_else(|| format!("config: {key}: expected a list"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("config: {key}[{i}]: expected a string"))
        })
        .collect()
}
