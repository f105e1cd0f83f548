//! The subscription table: patterns in a token trie, so a publish costs a walk
//! down its subject's tokens (plus the `*` and `>` branches on the way), not a
//! scan of every subscription. Pure; the router owns one.

use std::collections::HashMap;
use std::sync::Arc;

use super::registry::SessionKey;
use crate::protocol::OnFull;

/// One subscription as the table sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sub {
    pub key: SessionKey,
    pub sid: u64,
    pub queue: Option<Arc<str>>,
    pub on_full: OnFull,
}

/// The subscriptions at one place in the trie: a vector to walk on every
/// publish, indexed so that removing one costs O(1) however many share a pattern.
impl Sub {
    /// A subscription outside any queue group, paused when full.
    pub fn new(key: SessionKey, sid: u64) -> Self {
        Sub {
            key,
            sid,
            queue: None,
            on_full: OnFull::Pause,
        }
    }
}

#[derive(Debug, Default)]
struct SubList {
    subs: Vec<Sub>,
    at: HashMap<(SessionKey, u64), usize>,
}

impl SubList {
    fn push(&mut self, sub: Sub) {
        self.at.insert((sub.key, sub.sid), self.subs.len());
        self.subs.push(sub);
    }

    fn remove(&mut self, key: SessionKey, sid: u64) -> bool {
        let Some(i) = self.at.remove(&(key, sid)) else {
            return false;
        };
        self.subs.swap_remove(i);
        if let Some(moved) = self.subs.get(i) {
            self.at.insert((moved.key, moved.sid), i);
        }
        true
    }

    fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }
}

#[derive(Debug, Default)]
struct Node {
    literal: HashMap<Box<str>, Node>,
    star: Option<Box<Node>>,
    /// Subscriptions whose pattern ends here.
    here: SubList,
    /// Subscriptions whose pattern ends with `>` after this node.
    rest: SubList,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.star.is_none()
            && self.here.is_empty()
            && self.rest.is_empty()
    }

    fn collect<'a>(&'a self, tokens: &[&str], f: &mut impl FnMut(&'a Sub)) {
        if !tokens.is_empty() {
            self.rest.subs.iter().for_each(&mut *f);
        }
        let Some((first, rest)) = tokens.split_first() else {
            self.here.subs.iter().for_each(f);
            return;
        };
        if let Some(next) = self.literal.get(*first) {
            next.collect(rest, f);
        }
        if let Some(star) = &self.star {
            star.collect(rest, f);
        }
    }

    /// Removes `(key, sid)` under `tokens`: whether it was there, and whether
    /// this node is now empty.
    fn remove(&mut self, tokens: &[&str], key: SessionKey, sid: u64) -> (bool, bool) {
        let removed = match tokens.split_first() {
            None => self.here.remove(key, sid),
            Some((&">", [])) => self.rest.remove(key, sid),
            Some((&"*", rest)) => match &mut self.star {
                Some(star) => {
                    let (removed, empty) = star.remove(rest, key, sid);
                    if empty {
                        self.star = None;
                    }
                    removed
                }
                None => false,
            },
            Some((t, rest)) => match self.literal.get_mut(*t) {
                Some(next) => {
                    let (removed, empty) = next.remove(rest, key, sid);
                    if empty {
                        self.literal.remove(*t);
                    }
                    removed
                }
                None => false,
            },
        };
        (removed, self.is_empty())
    }
}

/// Every subscription on the bus, by pattern.
#[derive(Debug, Default)]
pub struct Subscriptions {
    root: Node,
    len: usize,
}

impl Subscriptions {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a subscription to a checked pattern.
    pub fn insert(&mut self, pattern: &str, sub: Sub) {
        let mut node = &mut self.root;
        let tokens: Vec<&str> = pattern.split('.').collect();
        for (i, t) in tokens.iter().enumerate() {
            if *t == ">" && i + 1 == tokens.len() {
                node.rest.push(sub);
                self.len += 1;
                return;
            }
            node = if *t == "*" {
                node.star.get_or_insert_with(Default::default)
            } else {
                node.literal.entry((*t).into()).or_default()
            };
        }
        node.here.push(sub);
        self.len += 1;
    }

    /// Removes the subscription `sid` of `key` made with `pattern`.
    pub fn remove(&mut self, pattern: &str, key: SessionKey, sid: u64) {
        let tokens: Vec<&str> = pattern.split('.').collect();
        if self.root.remove(&tokens, key, sid).0 {
            self.len -= 1;
        }
    }

    /// The subscriptions matching a subject, each once, into `out` (cleared first).
    pub fn matching<'a>(&'a self, subject: &str, out: &mut Vec<&'a Sub>) {
        out.clear();
        self.for_each_match(subject, |sub| out.push(sub));
    }

    /// Calls `f` with each subscription matching a subject, once each.
    pub fn for_each_match<'a>(&'a self, subject: &str, mut f: impl FnMut(&'a Sub)) {
        let mut tokens = [""; crate::subject::MAX_SUBJECT_TOKENS];
        let mut n = 0;
        for t in subject.split('.') {
            if n == tokens.len() {
                return; // not a checked subject: nothing matches
            }
            tokens[n] = t;
            n += 1;
        }
        self.root.collect(&tokens[..n], &mut f);
    }
}

/// Picks, for each queue group among `matched`, one member, and keeps every
/// subscription outside a group: the recipients of one publish. `turn` rotates
/// the choice; `busy(sub)` says a member is past high water, and is passed over
/// while another member of its group has room.
pub fn recipients<'a>(
    matched: &[&'a Sub],
    turn: u64,
    busy: impl Fn(&Sub) -> bool,
    out: &mut Vec<&'a Sub>,
) {
    out.clear();
    let mut groups: Vec<(&str, Vec<&'a Sub>)> = Vec::new();
    for sub in matched {
        match &sub.queue {
            None => out.push(sub),
            Some(q) => match groups.iter_mut().find(|(name, _)| *name == &**q) {
                Some((_, members)) => members.push(sub),
                None => groups.push((q, vec![sub])),
            },
        }
    }
    for (_, members) in groups {
        let start = (turn % members.len() as u64) as usize;
        let pick = (0..members.len())
            .map(|i| members[(start + i) % members.len()])
            .find(|m| !busy(m))
            .unwrap_or(members[start]);
        out.push(pick);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subject;
    use proptest::prelude::*;

    fn sub(key: SessionKey, sid: u64) -> Sub {
        Sub {
            key,
            sid,
            queue: None,
            on_full: OnFull::Pause,
        }
    }

    fn keys(t: &Subscriptions, subject: &str) -> Vec<(SessionKey, u64)> {
        let mut out = Vec::new();
        t.matching(subject, &mut out);
        let mut v: Vec<_> = out.iter().map(|s| (s.key, s.sid)).collect();
        v.sort();
        v
    }

    #[test]
    fn wildcards_and_removal() {
        let mut t = Subscriptions::default();
        t.insert("build.*.done", sub(1, 1));
        t.insert("build.>", sub(2, 1));
        t.insert("build.web.done", sub(3, 1));
        t.insert(">", sub(4, 1));
        assert_eq!(t.len(), 4);
        assert_eq!(
            keys(&t, "build.web.done"),
            vec![(1, 1), (2, 1), (3, 1), (4, 1)]
        );
        assert_eq!(keys(&t, "build"), vec![(4, 1)]);
        assert_eq!(keys(&t, "build.x"), vec![(2, 1), (4, 1)]);
        t.remove("build.>", 2, 1);
        t.remove("build.>", 2, 1); // twice: no effect
        assert_eq!(t.len(), 3);
        assert_eq!(keys(&t, "build.x"), vec![(4, 1)]);
        t.remove("build.*.done", 1, 1);
        t.remove("build.web.done", 3, 1);
        t.remove(">", 4, 1);
        assert!(t.is_empty());
        assert!(t.root.is_empty(), "empty branches are pruned");
    }

    #[test]
    fn queue_groups_pick_one_member_in_turn_and_skip_busy_ones() {
        let mut a = sub(1, 1);
        a.queue = Some("g".into());
        let mut b = sub(2, 1);
        b.queue = Some("g".into());
        let c = sub(3, 1);
        let matched = vec![&a, &b, &c];
        let mut out = Vec::new();
        recipients(&matched, 0, |_| false, &mut out);
        assert_eq!(out.iter().map(|s| s.key).collect::<Vec<_>>(), vec![3, 1]);
        recipients(&matched, 1, |_| false, &mut out);
        assert_eq!(out.iter().map(|s| s.key).collect::<Vec<_>>(), vec![3, 2]);
        recipients(&matched, 1, |s| s.key == 2, &mut out);
        assert_eq!(out.iter().map(|s| s.key).collect::<Vec<_>>(), vec![3, 1]);
        recipients(&matched, 1, |_| true, &mut out);
        assert_eq!(out.iter().map(|s| s.key).collect::<Vec<_>>(), vec![3, 2]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(500)))]

        /// The trie finds exactly what checking every pattern would.
        #[test]
        fn the_table_agrees_with_matching_each_pattern(
            patterns in proptest::collection::vec(
                proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("*"), Just(">")], 1..4), 1..20),
            subjects in proptest::collection::vec(
                proptest::collection::vec(prop_oneof![Just("a"), Just("b")], 1..4), 1..10),
        ) {
            let patterns: Vec<String> = patterns.iter().map(|p| p.join(".")).filter(|p| subject::check_pattern(p).is_ok()).collect();
            let mut t = Subscriptions::default();
            for (i, p) in patterns.iter().enumerate() {
                t.insert(p, sub(i as u64, 7));
            }
            for s in subjects {
                let s = s.join(".");
                let expect: Vec<(SessionKey, u64)> = patterns.iter().enumerate()
                    .filter(|(_, p)| subject::matches(p, &s)).map(|(i, _)| (i as u64, 7)).collect();
                prop_assert_eq!(keys(&t, &s), expect);
            }
            for (i, p) in patterns.iter().enumerate() {
                t.remove(p, i as u64, 7);
            }
            prop_assert!(t.is_empty());
            prop_assert!(t.root.is_empty());
        }
    }
}
