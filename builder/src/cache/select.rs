//! Which cache entries a build deletes: a pure function of the entries' use
//! times, the build's own entries, the limit and the build's start.

use std::collections::BTreeSet;
use std::time::SystemTime;

/// One complete cache entry, as the pruner found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its cache key (the entry's file or directory name).
    pub key: String,
    /// When a build last read or wrote it (see [`super::lease::Lease`]).
    pub used: SystemTime,
    /// Bytes it holds.
    pub size: u64,
}

/// What happens to each candidate.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection<'a> {
    /// Used by this build, or among the most recently used others.
    pub keep: Vec<&'a Candidate>,
    /// Past the limit but used since this build started: a concurrent build's.
    pub busy: Vec<&'a Candidate>,
    /// To delete, least recently used first.
    pub remove: Vec<&'a Candidate>,
}

/// Keeps the entries `this_build` used, plus the `keep_others` most recently
/// used other entries; the rest are removed unless they were used at or
/// after `started` (another build is working with them: only entries whose
/// use is older than this build can be known to be idle). Ties in use time
/// are broken by key, so the choice never depends on directory order.
pub fn select<'a>(
    entries: &'a [Candidate],
    this_build: &BTreeSet<String>,
    keep_others: usize,
    started: SystemTime,
) -> Selection<'a> {
    let mut sel = Selection::default();
    let mut others: Vec<&Candidate> = Vec::new();
    for c in entries {
        if this_build.contains(&c.key) {
            sel.keep.push(c);
        } else {
            others.push(c);
        }
    }
    // Most recently used first.
    others.sort_by(|a, b| b.used.cmp(&a.used).then_with(|| a.key.cmp(&b.key)));
    for (i, c) in others.into_iter().enumerate() {
        if i < keep_others {
            sel.keep.push(c);
        } else if c.used >= started {
            sel.busy.push(c);
        } else {
            sel.remove.push(c);
        }
    }
    sel.remove.reverse();
    sel
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn c(key: &str, used: u64) -> Candidate {
        Candidate {
            key: key.into(),
            used: at(used),
            size: 1,
        }
    }

    fn keys(v: &[&Candidate]) -> Vec<String> {
        v.iter().map(|c| c.key.clone()).collect()
    }

    fn set(keys: &[&str]) -> BTreeSet<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    const START: u64 = 1000;

    #[test]
    fn keeps_this_builds_and_the_most_recently_used_others() {
        // Listed in no particular order; "b" is old but this build used it.
        let e = [c("a", 10), c("f", 60), c("b", 5), c("e", 50), c("c", 30)];
        let s = select(&e, &set(&["b"]), 2, at(START));
        assert_eq!(keys(&s.keep), ["b", "f", "e"]);
        assert_eq!(keys(&s.remove), ["a", "c"]);
        assert!(s.busy.is_empty());
    }

    #[test]
    fn removes_least_recently_used_first() {
        let e = [c("x", 3), c("y", 1), c("z", 2), c("new", 9)];
        let s = select(&e, &BTreeSet::new(), 1, at(START));
        assert_eq!(keys(&s.keep), ["new"]);
        assert_eq!(keys(&s.remove), ["y", "z", "x"]);
    }

    #[test]
    fn keep_zero_leaves_only_this_builds_entries() {
        let e = [c("mine", 1), c("old", 2), c("older", 1)];
        let s = select(&e, &set(&["mine"]), 0, at(START));
        assert_eq!(keys(&s.keep), ["mine"]);
        assert_eq!(keys(&s.remove), ["older", "old"]);
    }

    #[test]
    fn entries_used_since_this_build_started_are_never_removed() {
        // Another build touched "theirs" after ours started, and "edge"
        // exactly at our start: both may be in use.
        let e = [
            c("old", 1),
            c("theirs", START + 5),
            c("edge", START),
            c("mine", 2),
        ];
        let s = select(&e, &set(&["mine"]), 0, at(START));
        assert_eq!(keys(&s.keep), ["mine"]);
        assert_eq!(keys(&s.busy), ["theirs", "edge"]);
        assert_eq!(keys(&s.remove), ["old"]);
    }

    #[test]
    fn ties_are_broken_by_key_and_a_large_limit_keeps_all() {
        let e = [c("b", 7), c("a", 7), c("c", 7)];
        let s = select(&e, &BTreeSet::new(), 1, at(START));
        assert_eq!(keys(&s.keep), ["a"]);
        assert_eq!(keys(&s.remove), ["c", "b"]);
        let all = select(&e, &BTreeSet::new(), 10, at(START));
        assert_eq!(all.keep.len(), 3);
        assert!(all.remove.is_empty() && all.busy.is_empty());
        assert_eq!(
            select(&[], &set(&["gone"]), 3, at(START)),
            Selection::default()
        );
    }
}
