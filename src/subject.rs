//! Subjects and patterns (protocol 2): `.`-separated, case-sensitive tokens;
//! in patterns `*` matches one token and a last `>` one or more. Pure functions,
//! shared by the router's subscription table, the monitor and hook matching.

/// Longest subject or pattern, in bytes.
pub const MAX_SUBJECT_LEN: usize = 256;

/// Most tokens in a subject or pattern.
pub const MAX_SUBJECT_TOKENS: usize = 16;

/// Why a subject or pattern was refused (the `detail` of a `bad_subject` error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("a subject must not be empty")]
    Empty,
    #[error("a subject has at most {MAX_SUBJECT_LEN} bytes (this one has {0})")]
    TooLong(usize),
    #[error("a subject has at most {MAX_SUBJECT_TOKENS} tokens (this one has {0})")]
    TooManyTokens(usize),
    #[error("empty token in `{0}`: tokens are separated by single dots")]
    EmptyToken(String),
    #[error("whitespace or a control character in {0:?}: tokens contain neither")]
    Whitespace(String),
    #[error("wildcards (`*`, `>`) are for subscriptions, not for `{0}`")]
    Wildcard(String),
    #[error("`>` must be the last token, alone, and `*` a whole token, in `{0}`")]
    MisplacedWildcard(String),
    #[error("subjects starting with `$` are reserved for the bus (`{0}`)")]
    Reserved(String),
}

/// What one pass over a subject or pattern finds (publishes check one each).
struct Scan {
    tokens: usize,
    empty_token: bool,
    whitespace: bool,
    wildcard: bool,
}

fn scan(s: &str) -> Scan {
    let mut scan = Scan {
        tokens: 1,
        empty_token: false,
        whitespace: false,
        wildcard: false,
    };
    let mut token_len = 0usize;
    for b in s.bytes() {
        match b {
            b'.' => {
                scan.empty_token |= token_len == 0;
                scan.tokens += 1;
                token_len = 0;
                continue;
            }
            b'*' | b'>' => scan.wildcard = true,
            _ if b.is_ascii_whitespace() || b.is_ascii_control() => scan.whitespace = true,
            _ => {}
        }
        token_len += 1;
    }
    scan.empty_token |= token_len == 0;
    scan
}

/// The checks subjects and patterns share, in the order their errors are
/// reported; the scan, for the caller's own.
fn check_common(s: &str) -> Result<Scan, SubjectError> {
    if s.is_empty() {
        return Err(SubjectError::Empty);
    }
    if s.len() > MAX_SUBJECT_LEN {
        return Err(SubjectError::TooLong(s.len()));
    }
    let scan = scan(s);
    if scan.whitespace {
        return Err(SubjectError::Whitespace(s.to_owned()));
    }
    if scan.tokens > MAX_SUBJECT_TOKENS {
        return Err(SubjectError::TooManyTokens(scan.tokens));
    }
    if scan.empty_token {
        return Err(SubjectError::EmptyToken(s.to_owned()));
    }
    Ok(scan)
}

/// Checks a subject a client publishes on or requests: no wildcards, not reserved.
pub fn check_subject(s: &str) -> Result<(), SubjectError> {
    if check_common(s)?.wildcard {
        return Err(SubjectError::Wildcard(s.to_owned()));
    }
    if s.starts_with('$') {
        return Err(SubjectError::Reserved(s.to_owned()));
    }
    Ok(())
}

/// Checks a pattern: `*` only as a whole token, `>` only as the whole last token.
/// Reserved (`$`) subjects may be subscribed to.
pub fn check_pattern(p: &str) -> Result<(), SubjectError> {
    check_common(p)?;
    let n = p.split('.').count();
    for (i, t) in p.split('.').enumerate() {
        let wild = t.contains('*') || t.contains('>');
        let ok = !wild || t == "*" || (t == ">" && i + 1 == n);
        if !ok {
            return Err(SubjectError::MisplacedWildcard(p.to_owned()));
        }
    }
    Ok(())
}

/// Whether `pattern` matches `subject` (both already checked).
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for p in pattern.split('.') {
        if p == ">" {
            return subject.next().is_some();
        }
        match subject.next() {
            Some(s) if p == "*" || p == s => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

/// Whether some subject matches both patterns (used for `interest`). Walks
/// both token by token, allocating nothing: an `interest` checks every
/// subscription on the bus.
pub fn overlaps(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('.'), b.split('.'));
    loop {
        match (a.next(), b.next()) {
            // `>` takes one or more tokens: the other side needs at least one more.
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) => {
                if x != "*" && y != "*" && x != y {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether a pattern has no wildcard (it names one subject).
pub fn is_literal(pattern: &str) -> bool {
    pattern.split('.').all(|t| t != "*" && t != ">")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nats_documentation_examples() {
        // https://docs.nats.io/nats-concepts/subjects
        assert!(matches("time.*.east", "time.us.east"));
        assert!(matches("time.*.east", "time.eu.east"));
        assert!(!matches("time.*.east", "time.us.east.atlanta"));
        assert!(matches("time.us.>", "time.us.east"));
        assert!(matches("time.us.>", "time.us.east.atlanta"));
        assert!(!matches("time.us.>", "time.us"));
        assert!(matches("*.*.east.>", "time.us.east.atlanta"));
        assert!(!matches("*.*.east.>", "time.us.east"));
        assert!(matches(">", "a"));
        assert!(matches(">", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.B"), "case-sensitive");
        assert!(!matches("a.*", "a"));
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(check_subject(""), Err(SubjectError::Empty));
        assert!(matches!(
            check_subject("a..b"),
            Err(SubjectError::EmptyToken(_))
        ));
        assert!(matches!(
            check_subject(".a"),
            Err(SubjectError::EmptyToken(_))
        ));
        assert!(matches!(
            check_subject("a."),
            Err(SubjectError::EmptyToken(_))
        ));
        assert!(matches!(
            check_subject("a b"),
            Err(SubjectError::Whitespace(_))
        ));
        assert!(matches!(
            check_subject("a.*"),
            Err(SubjectError::Wildcard(_))
        ));
        assert!(matches!(
            check_subject("a.>"),
            Err(SubjectError::Wildcard(_))
        ));
        assert!(matches!(
            check_subject("$sys.x"),
            Err(SubjectError::Reserved(_))
        ));
        assert!(matches!(
            check_pattern("a.>.b"),
            Err(SubjectError::MisplacedWildcard(_))
        ));
        assert!(matches!(
            check_pattern("a.b*"),
            Err(SubjectError::MisplacedWildcard(_))
        ));
        assert!(matches!(
            check_pattern("a.>x"),
            Err(SubjectError::MisplacedWildcard(_))
        ));
        assert!(check_pattern("$jobs.>").is_ok());
        assert!(check_pattern("*.b.>").is_ok());
        let long = "a".repeat(MAX_SUBJECT_LEN + 1);
        assert!(matches!(
            check_subject(&long),
            Err(SubjectError::TooLong(_))
        ));
        let many = vec!["a"; MAX_SUBJECT_TOKENS + 1].join(".");
        assert!(matches!(
            check_subject(&many),
            Err(SubjectError::TooManyTokens(_))
        ));
        assert!(check_subject(&vec!["a"; MAX_SUBJECT_TOKENS].join(".")).is_ok());
    }

    #[test]
    fn overlap_examples() {
        assert!(overlaps("quotes.>", "quotes.*"));
        assert!(overlaps("quotes.>", "quotes.a.b"));
        assert!(!overlaps("quotes.>", "quotes"));
        assert!(overlaps("*.x", "a.*"));
        assert!(!overlaps("a.x", "a.y"));
        assert!(!overlaps("a.*", "a.b.c"));
        assert!(overlaps(">", "a.b.c"));
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("c".to_owned())
        ]
    }

    fn subject() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec(token(), 1..5)
    }

    fn pattern() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(prop_oneof![token(), Just("*".to_owned())], 0..4),
            any::<bool>(),
        )
            .prop_filter_map("non-empty", |(mut toks, tail)| {
                if tail {
                    toks.push(">".to_owned());
                }
                (!toks.is_empty()).then(|| toks.join("."))
            })
    }

    /// A reference matcher written from the definition, token by token.
    fn reference(p: &[&str], s: &[&str]) -> bool {
        match (p.first(), s.first()) {
            (Some(&">"), _) => !s.is_empty(),
            (Some(&"*"), Some(_)) => reference(&p[1..], &s[1..]),
            (Some(x), Some(y)) if x == y => reference(&p[1..], &s[1..]),
            (None, None) => true,
            _ => false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(2000)))]

        #[test]
        fn matching_agrees_with_the_definition(p in pattern(), s in subject()) {
            let subject = s.join(".");
            prop_assert!(check_pattern(&p).is_ok());
            prop_assert!(check_subject(&subject).is_ok());
            let pt: Vec<&str> = p.split('.').collect();
            let st: Vec<&str> = subject.split('.').collect();
            prop_assert_eq!(matches(&p, &subject), reference(&pt, &st), "{} vs {}", p, subject);
        }

        /// The one-pass check agrees with the rules read token by token.
        #[test]
        fn check_subject_agrees_with_the_rules(s in "[ab.*> \\t$]{0,20}") {
            let tokens: Vec<&str> = s.split('.').collect();
            let expected = if s.is_empty() {
                Err("empty")
            } else if s.contains([' ', '\t']) {
                Err("whitespace")
            } else if tokens.len() > MAX_SUBJECT_TOKENS {
                Err("tokens")
            } else if tokens.iter().any(|t| t.is_empty()) {
                Err("empty token")
            } else if s.contains(['*', '>']) {
                Err("wildcard")
            } else if s.starts_with('$') {
                Err("reserved")
            } else {
                Ok(())
            };
            let got = check_subject(&s).map_err(|e| match e {
                SubjectError::Empty => "empty",
                SubjectError::Whitespace(_) => "whitespace",
                SubjectError::TooManyTokens(_) => "tokens",
                SubjectError::EmptyToken(_) => "empty token",
                SubjectError::Wildcard(_) => "wildcard",
                SubjectError::Reserved(_) => "reserved",
                other => panic!("{other:?}"),
            });
            prop_assert_eq!(got, expected, "{:?}", s);
        }

        /// A literal pattern matches exactly its own subject.
        #[test]
        fn a_subject_matches_itself_only(a in subject(), b in subject()) {
            let (a, b) = (a.join("."), b.join("."));
            prop_assert_eq!(matches(&a, &b), a == b);
        }

    }

    proptest! {
        // Each case walks ~1,400 subjects: fewer cases.
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Two patterns overlap when (and, over this small alphabet with short
        /// subjects, only when) some subject matches both.
        #[test]
        fn overlap_means_a_common_subject(a in pattern(), b in pattern()) {
            let alphabet = ["a", "b", "c", "d"];
            let mut common = false;
            // Every subject of up to 5 tokens over a..d: enough to witness any overlap
            // of patterns with at most 4 tokens plus `>`.
            let mut stack: Vec<Vec<&str>> = vec![vec![]];
            while let Some(s) = stack.pop() {
                if !s.is_empty() {
                    let subj = s.join(".");
                    if matches(&a, &subj) && matches(&b, &subj) {
                        common = true;
                        break;
                    }
                }
                if s.len() < 5 {
                    for t in alphabet {
                        let mut n = s.clone();
                        n.push(t);
                        stack.push(n);
                    }
                }
            }
            prop_assert_eq!(overlaps(&a, &b), common, "{} vs {}", a, b);
        }
    }
}
