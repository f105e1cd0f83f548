//! The routing fields a hook sees and matches on (`type`, `to`, `from`, `id`,
//! `subject`),
//! read from a message's JSON text in one pass over its top level, without
//! building a DOM.

use std::borrow::Cow;

use super::config::HookConfig;
use super::wasm::MessageView;

/// The routing fields a hook sees: the raw JSON text of each top-level `type`, `to`,
/// `from` and `id` member, borrowed from the message (`None` when absent).
#[derive(Debug, Default)]
pub struct Fields<'a> {
    pub(super) kind: Option<&'a str>,
    pub(super) to: Option<&'a str>,
    pub(super) from: Option<&'a str>,
    pub(super) id: Option<&'a str>,
    pub(super) subject: Option<&'a str>,
    /// A `job_publish`'s goal, matched as its subject.
    pub(super) goal: Option<&'a str>,
}

/// Where the routing fields sit in a message's JSON: read once per version of
/// the message (as it arrived, then after each rewrite) and kept with it through
/// the whole filter chain, so each hook does not read them again.
#[derive(Debug, Default, Clone)]
pub struct Spans([Option<(usize, usize)>; 6]);

impl Spans {
    pub fn of(json: &str) -> Self {
        let f = Fields::parse(json);
        let at = |part: Option<&str>| {
            part.map(|p| {
                let start = p.as_ptr() as usize - json.as_ptr() as usize;
                (start, start + p.len())
            })
        };
        Spans([
            at(f.kind),
            at(f.to),
            at(f.from),
            at(f.id),
            at(f.subject),
            at(f.goal),
        ])
    }

    /// The fields, given the JSON they were read from.
    pub fn fields<'a>(&self, json: &'a str) -> Fields<'a> {
        let [kind, to, from, id, subject, goal] =
            self.0.map(|span| span.and_then(|(a, b)| json.get(a..b)));
        Fields {
            kind,
            to,
            from,
            id,
            subject,
            goal,
        }
    }
}

/// A raw JSON value as a string, if it is one.
fn raw_str(raw: Option<&str>) -> Option<Cow<'_, str>> {
    let raw = raw?;
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
}

/// Typed copies of the routing fields, for matching and for the call.
pub struct FieldStrs<'a> {
    kind: Option<Cow<'a, str>>,
    to: Option<Cow<'a, str>>,
    from: Option<Cow<'a, str>>,
    id: Option<Cow<'a, str>>,
    subject: Option<Cow<'a, str>>,
}

impl<'a> Fields<'a> {
    /// Reads the routing fields of `json`, which must already be known to be valid
    /// JSON (the protocol parser or `rewrite` checked it): one pass over the top
    /// level, nested values skipped without being parsed. A key written with escapes
    /// is decoded, so `"t\u006f"` is `to`, as for the router. When a key repeats, the
    /// last one counts. Not an object: no fields.
    pub fn parse(json: &'a str) -> Self {
        let mut fields = Fields::default();
        let complete = top_level_members(json, |key, value| {
            let key: Cow<'_, str> = if key.contains('\\') {
                match serde_json::from_str::<String>(&format!("\"{key}\"")) {
                    Ok(k) => Cow::Owned(k),
                    Err(_) => return,
                }
            } else {
                Cow::Borrowed(key)
            };
            let slot = match &*key {
                "type" => &mut fields.kind,
                "to" => &mut fields.to,
                "from" => &mut fields.from,
                "id" => &mut fields.id,
                "subject" => &mut fields.subject,
                "goal" => &mut fields.goal,
                _ => return,
            };
            *slot = Some(value);
        });
        if complete {
            fields
        } else {
            Fields::default()
        }
    }

    pub fn strs(&self) -> FieldStrs<'a> {
        FieldStrs {
            kind: raw_str(self.kind),
            to: raw_str(self.to),
            from: raw_str(self.from),
            id: raw_str(self.id),
            subject: raw_str(self.subject).or_else(|| raw_str(self.goal)),
        }
    }
}

impl FieldStrs<'_> {
    pub fn to(&self) -> &str {
        self.to.as_deref().unwrap_or("")
    }

    pub fn matches(&self, hook: &HookConfig) -> bool {
        hook.matcher.matches(
            self.kind.as_deref().unwrap_or(""),
            self.to(),
            self.from.as_deref().unwrap_or(""),
            self.subject.as_deref(),
        )
    }

    pub fn view<'s>(&'s self, json: &'s str) -> MessageView<'s> {
        MessageView {
            kind: self.kind.as_deref().unwrap_or(""),
            to: self.to.as_deref().filter(|t| !t.is_empty()),
            from: self.from.as_deref(),
            id: self.id.as_deref(),
            json,
        }
    }
}

/// Calls `member(key, value)` for each top-level member of the JSON object `json`
/// (the key's text between its quotes, the value's raw text). Assumes valid JSON;
/// returns false when the text is not an object or ends early.
fn top_level_members<'a>(json: &'a str, mut member: impl FnMut(&'a str, &'a str)) -> bool {
    let bytes = json.as_bytes();
    let mut i = skip_ws(bytes, 0);
    if bytes.get(i) != Some(&b'{') {
        return false;
    }
    i = skip_ws(bytes, i + 1);
    if bytes.get(i) == Some(&b'}') {
        return true;
    }
    loop {
        if bytes.get(i) != Some(&b'"') {
            return false;
        }
        let key_start = i + 1;
        let Some(key_end) = string_end(bytes, i) else {
            return false;
        };
        i = skip_ws(bytes, key_end);
        if bytes.get(i) != Some(&b':') {
            return false;
        }
        let start = skip_ws(bytes, i + 1);
        let Some(end) = value_end(bytes, start) else {
            return false;
        };
        // Every index here sits on an ASCII byte, so on a char boundary.
        member(&json[key_start..key_end - 1], &json[start..end]);
        i = skip_ws(bytes, end);
        match bytes.get(i) {
            Some(b',') => i = skip_ws(bytes, i + 1),
            Some(b'}') => return true,
            _ => return false,
        }
    }
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while matches!(bytes.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// `bytes[start]` is an opening quote: the index after the closing one.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', bytes.get(i..)?)?;
        if bytes[i] == b'"' {
            return Some(i + 1);
        }
        i += 2; // a backslash and the character it escapes
    }
}

/// The index just after the value starting at `start`.
fn value_end(bytes: &[u8], start: usize) -> Option<usize> {
    match bytes.get(start)? {
        b'"' => string_end(bytes, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            while i < bytes.len() {
                match bytes[i] {
                    b'"' => {
                        i = string_end(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let len = bytes[start..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))?;
            (len > 0).then_some(start + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn raw<'a>(f: &Fields<'a>) -> [Option<&'a str>; 4] {
        [f.kind, f.to, f.from, f.id]
    }

    #[test]
    fn spans_give_back_the_fields_they_were_read_as() {
        let json = r#"{"type":"publish","subject":"a.b","from":"x","id":"1","goal":"g","to":null}"#;
        let (read, kept) = (Fields::parse(json), Spans::of(json).fields(json));
        assert_eq!(raw(&read), raw(&kept));
        assert_eq!((read.subject, read.goal), (kept.subject, kept.goal));
        assert_eq!(raw(&Spans::default().fields(json)), [None; 4]);
    }

    #[test]
    fn routing_fields_are_read_from_the_top_level_only() {
        let json = r#" { "body" : {"to":"inner","x":["}",{"from":"no"}]}, "to" : "a\"b",
            "t\u0079pe":"message","id":7,"from":null,"s":"{\\","n":-1.5e3 } "#;
        let f = Fields::parse(json);
        assert_eq!(
            raw(&f),
            [
                Some(r#""message""#),
                Some(r#""a\"b""#),
                Some("null"),
                Some("7")
            ]
        );
        let strs = f.strs();
        assert_eq!(strs.to(), "a\"b");
        assert_eq!(strs.from, None);
        assert_eq!(
            raw(&Fields::parse(r#"{"to":"a","to":"b"}"#))[1],
            Some(r#""b""#)
        );
        for not_an_object in ["[]", "\"to\"", "1", "", "{\"to\""] {
            assert_eq!(
                raw(&Fields::parse(not_an_object)),
                [None; 4],
                "{not_an_object}"
            );
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z\"\\\\{}\\[\\],: é\u{1F600}]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("(to|from|id|type|[a-z]{1,3})", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The scanner agrees with serde_json on any object, pretty-printed or not.
        #[test]
        fn the_scanner_agrees_with_serde(
            top in prop::collection::btree_map("(to|from|id|type|body|[a-z]{1,3})", json_value(), 0..6),
            pretty in any::<bool>(),
        ) {
            let value = Value::Object(top.clone().into_iter().collect());
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                value.to_string()
            };
            let f = Fields::parse(&text);
            for (key, got) in [("type", f.kind), ("to", f.to), ("from", f.from), ("id", f.id)] {
                let want = top.get(key);
                let got: Option<Value> = got.map(|r| serde_json::from_str(r).unwrap());
                prop_assert_eq!(got.as_ref(), want, "{} in {}", key, text);
            }
        }
    }
}
