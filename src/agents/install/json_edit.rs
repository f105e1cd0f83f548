//! Adds and removes hook handlers in a JSON config shaped
//! `{"hooks": {"<Event>": [{"matcher"?, "hooks": [{"type": "command", "command", …}]}]}}`
//! (Claude Code, Codex, Gemini CLI) by editing its text: every new entry is
//! appended after the last item of its container, in the file's indentation,
//! and removing it deletes exactly that text, so an uninstall after an install
//! gives the file back byte for byte and nothing else in it ever changes.

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::Value;

use super::MARK;

/// The handler added, its fields in the order people write them.
#[derive(Debug, Serialize)]
pub struct Handler<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub command: &'a str,
    pub timeout: u64,
}

/// A matcher group holding only our handler (no matcher: every tool).
#[derive(Debug, Serialize)]
struct Group<'a> {
    hooks: [&'a Handler<'a>; 1],
}

/// Where a JSON value sits in the text.
#[derive(Debug)]
struct Node {
    start: usize,
    end: usize,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Object(Vec<Member>),
    Array(Vec<Node>),
    Other,
}

#[derive(Debug)]
struct Member {
    key: String,
    key_start: usize,
    value: Node,
}

/// An item of a container, as a span: a member from its key, or an element.
fn span_of(container: &Node, i: usize) -> (usize, usize) {
    match &container.kind {
        Kind::Object(m) => (m[i].key_start, m[i].value.end),
        Kind::Array(e) => (e[i].start, e[i].end),
        Kind::Other => unreachable!("not a container"),
    }
}

fn len_of(container: &Node) -> usize {
    match &container.kind {
        Kind::Object(m) => m.len(),
        Kind::Array(e) => e.len(),
        Kind::Other => 0,
    }
}

/// A parser that keeps spans; the text is checked by serde_json first, so it
/// only has to find where things are.
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn value(&mut self, text: &str) -> anyhow::Result<Node> {
        self.ws();
        let start = self.i;
        let kind = match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut members = Vec::new();
                loop {
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b'}') => break,
                        Some(b',') => self.i += 1,
                        Some(b'"') => {
                            let key_start = self.i;
                            self.string();
                            let key: String = serde_json::from_str(&text[key_start..self.i])?;
                            self.ws();
                            self.i += 1; // ':'
                            let value = self.value(text)?;
                            members.push(Member {
                                key,
                                key_start,
                                value,
                            });
                        }
                        _ => bail!("unexpected text at byte {}", self.i),
                    }
                }
                self.i += 1;
                Kind::Object(members)
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b']') => break,
                        Some(b',') => self.i += 1,
                        Some(_) => items.push(self.value(text)?),
                        None => bail!("unexpected end"),
                    }
                }
                self.i += 1;
                Kind::Array(items)
            }
            Some(b'"') => {
                self.string();
                Kind::Other
            }
            Some(_) => {
                while self.i < self.s.len()
                    && !matches!(
                        self.s[self.i],
                        b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r'
                    )
                {
                    self.i += 1;
                }
                Kind::Other
            }
            None => bail!("unexpected end"),
        };
        Ok(Node {
            start,
            end: self.i,
            kind,
        })
    }

    fn string(&mut self) {
        self.i += 1;
        while self.i < self.s.len() && self.s[self.i] != b'"' {
            self.i += if self.s[self.i] == b'\\' { 2 } else { 1 };
        }
        self.i += 1;
    }
}

fn parse(text: &str) -> anyhow::Result<Node> {
    let _: Value = serde_json::from_str(text).context("it is not valid JSON: fix it first")?;
    let root = Parser {
        s: text.as_bytes(),
        i: 0,
    }
    .value(text)?;
    if !matches!(root.kind, Kind::Object(_)) {
        bail!("it is not a JSON object");
    }
    Ok(root)
}

fn member<'a>(object: &'a Node, key: &str) -> Option<(usize, &'a Node)> {
    match &object.kind {
        Kind::Object(members) => members
            .iter()
            .enumerate()
            .find(|(_, m)| m.key == key)
            .map(|(i, m)| (i, &m.value)),
        _ => None,
    }
}

/// The file's indentation unit: what precedes the root's first key on its
/// line (two spaces when it has no members or no line breaks).
fn unit(text: &str, root: &Node) -> String {
    if let Kind::Object(members) = &root.kind {
        if let Some(first) = members.first() {
            let before = &text[root.start + 1..first.key_start];
            if let Some(nl) = before.rfind('\n') {
                let indent = &before[nl + 1..];
                if !indent.is_empty() {
                    return indent.to_owned();
                }
            }
        }
    }
    "  ".to_owned()
}

/// `value` pretty-printed with `unit`, its lines after the first indented by
/// `indent`.
fn pretty(value: &impl Serialize, unit: &str, indent: &str) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(unit.as_bytes());
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(value, &mut ser).expect("a JSON value serializes");
    String::from_utf8(out)
        .expect("JSON is UTF-8")
        .replace('\n', &format!("\n{indent}"))
}

/// Appends `item` (a member `"key": value` when `key` is given, else an
/// element) to the container at `depth`.
fn append(
    text: &str,
    container: &Node,
    depth: usize,
    unit: &str,
    key: Option<&str>,
    value: &impl Serialize,
) -> String {
    let indent = unit.repeat(depth + 1);
    let mut item = String::new();
    if let Some(key) = key {
        item.push_str(&Value::from(key).to_string());
        item.push_str(": ");
    }
    item.push_str(&pretty(value, unit, &indent));
    let n = len_of(container);
    if n > 0 {
        let (_, end) = span_of(container, n - 1);
        format!("{},\n{indent}{item}{}", &text[..end], &text[end..])
    } else {
        let close = unit.repeat(depth);
        format!(
            "{}\n{indent}{item}\n{close}{}",
            &text[..container.start + 1],
            &text[container.end - 1..]
        )
    }
}

/// Removes item `i` of `container` with the separator that came with it.
fn remove(text: &str, container: &Node, i: usize) -> String {
    let n = len_of(container);
    let (start, end) = if n == 1 {
        (container.start + 1, container.end - 1)
    } else if i > 0 {
        (span_of(container, i - 1).1, span_of(container, i).1)
    } else {
        (span_of(container, 0).0, span_of(container, 1).0)
    };
    format!("{}{}", &text[..start], &text[end..])
}

fn is_ours(handler: &Node, text: &str) -> bool {
    member(handler, "command")
        .and_then(|(_, c)| serde_json::from_str::<String>(&text[c.start..c.end]).ok())
        .is_some_and(|c| c.contains(MARK) && c.contains("hookbus"))
}

/// Where the command of our handler in the event's array is, if one is.
fn ours_command(text: &str, groups: &Node) -> Option<(usize, usize)> {
    let Kind::Array(groups) = &groups.kind else {
        return None;
    };
    groups.iter().find_map(|g| {
        let (_, hs) = member(g, "hooks")?;
        let Kind::Array(hs) = &hs.kind else {
            return None;
        };
        let h = hs.iter().find(|h| is_ours(h, text))?;
        member(h, "command").map(|(_, c)| (c.start, c.end))
    })
}

/// Adds a group holding `handler` to each of `events` that lacks one of ours.
/// Returns the new text and the events added to.
pub fn install(
    old: &str,
    events: &[String],
    handler: &Handler<'_>,
) -> anyhow::Result<(String, Vec<String>)> {
    let mut text = if old.trim().is_empty() {
        "{}\n".to_owned()
    } else {
        old.to_owned()
    };
    let group = Group { hooks: [handler] };
    let mut added = Vec::new();
    for event in events {
        let root = parse(&text)?;
        let unit = unit(&text, &root);
        text = match member(&root, "hooks") {
            None => {
                let hooks = std::collections::BTreeMap::from([(event.as_str(), [&group])]);
                append(&text, &root, 0, &unit, Some("hooks"), &hooks)
            }
            Some((_, hooks)) => {
                if !matches!(hooks.kind, Kind::Object(_)) {
                    bail!("its `hooks` is not an object");
                }
                match member(hooks, event) {
                    None => append(&text, hooks, 1, &unit, Some(event), &[&group]),
                    Some((_, groups)) if !matches!(groups.kind, Kind::Array(_)) => {
                        bail!("its `hooks.{event}` is not a list")
                    }
                    Some((_, groups)) => match ours_command(&text, groups) {
                        // Ours already: its command brought up to date.
                        Some((start, end)) => {
                            let command = Value::from(handler.command).to_string();
                            if text[start..end] == command {
                                continue;
                            }
                            format!("{}{command}{}", &text[..start], &text[end..])
                        }
                        None => append(&text, groups, 2, &unit, None, &group),
                    },
                }
            }
        };
        added.push(event.clone());
    }
    parse(&text).context("the edit broke the file (a bug: nothing was written)")?;
    Ok((text, added))
}

/// Removes every handler of ours, and the group, event and `hooks` key that
/// only held it. Returns the new text and how many handlers went.
pub fn uninstall(old: &str) -> anyhow::Result<(String, usize)> {
    let mut text = old.to_owned();
    let mut removed = 0;
    loop {
        let root = parse(&text)?;
        let Some((hooks_i, hooks)) = member(&root, "hooks") else {
            break;
        };
        let Kind::Object(events) = &hooks.kind else {
            break;
        };
        let found = events.iter().enumerate().find_map(|(ei, e)| {
            let Kind::Array(groups) = &e.value.kind else {
                return None;
            };
            groups.iter().enumerate().find_map(|(gi, g)| {
                let (_, hs) = member(g, "hooks")?;
                let Kind::Array(handlers) = &hs.kind else {
                    return None;
                };
                let hi = handlers.iter().position(|h| is_ours(h, &text))?;
                Some((ei, &e.value, gi, hs, hi))
            })
        });
        let Some((ei, groups, gi, handlers, hi)) = found else {
            break;
        };
        text = if len_of(handlers) > 1 {
            remove(&text, handlers, hi)
        } else if len_of(groups) > 1 {
            remove(&text, groups, gi)
        } else if events.len() > 1 {
            remove(&text, hooks, ei)
        } else {
            remove(&text, &root, hooks_i)
        };
        removed += 1;
    }
    Ok((text, removed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler() -> Handler<'static> {
        Handler {
            name: None,
            kind: "command",
            command: "/bin/hookbus agent-hook --agent claude",
            timeout: 10,
        }
    }

    #[test]
    fn install_then_uninstall_gives_the_file_back_byte_for_byte() {
        let events = vec!["PreToolUse".to_owned(), "Stop".to_owned()];
        for original in [
            "{\n  \"model\": \"opus\",\n  \"env\": {\"A\": \"\\u00e9\"}\n}\n",
            "{\"model\":\"x\",\"hooks\":{\"PreToolUse\":[{\"matcher\":\"Bash\",\"hooks\":[{\"type\":\"command\",\"command\":\"mine.sh\"}]}]}}",
            "{\n\t\"hooks\": {\n\t\t\"Notification\": []\n\t},\n\t\"x\": 1.50\n}",
            "{}",
        ] {
            let (installed, added) = install(original, &events, &handler()).unwrap();
            assert_eq!(added, events, "{original}");
            let v: Value = serde_json::from_str(&installed).unwrap();
            assert_eq!(
                v["hooks"]["PreToolUse"].as_array().unwrap().last().unwrap()["hooks"][0],
                serde_json::to_value(handler()).unwrap(),
                "{installed}"
            );
            let (again, added) = install(&installed, &events, &handler()).unwrap();
            assert!(added.is_empty());
            assert_eq!(again, installed, "idempotent");
            let (back, removed) = uninstall(&installed).unwrap();
            assert_eq!(removed, 2);
            assert_eq!(back, original, "{installed}");
        }
        assert!(install("{not json", &events, &handler()).is_err());
        assert!(install("{\"hooks\": 3}", &events, &handler()).is_err());
    }
}
