//! Boot entry file names and boot counting, as systemd-boot and
//! systemd-bless-boot treat them (Automatic Boot Assessment,
//! https://uapi-group.org/specifications/specs/boot_loader_specification/#boot-counting):
//! `hakube_V.conf` (no counter: blessed, or the first install),
//! `hakube_V+L.conf` / `hakube_V+L-D.conf` (L tries left, D done). systemd-boot
//! counts a try down before booting an entry with tries left; one with none
//! left is bad and sorted last; systemd-bless-boot removes the counter (good)
//! or sets L to 0 (bad).

use crate::{ImageVersion, IMAGE_ID};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootCounter {
    pub left: u32,
    pub done: u32,
}

/// A hakube boot entry's file name, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryName {
    pub version: ImageVersion,
    pub counter: Option<BootCounter>,
}

/// What boot assessment says about an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assessment {
    /// No counter: blessed (or the first install).
    Good,
    /// Counting, with tries left: not yet judged.
    Indeterminate,
    /// No tries left.
    Bad,
}

impl Assessment {
    pub fn as_str(self) -> &'static str {
        match self {
            Assessment::Good => "good",
            Assessment::Indeterminate => "indeterminate",
            Assessment::Bad => "bad",
        }
    }
}

impl EntryName {
    pub fn new(version: ImageVersion, counter: Option<BootCounter>) -> EntryName {
        EntryName { version, counter }
    }

    /// Parses `hakube_V[+L[-D]].conf`; `None` for any other file.
    pub fn parse(file_name: &str) -> Option<EntryName> {
        let stem = file_name
            .strip_suffix(".conf")?
            .strip_prefix(IMAGE_ID)?
            .strip_prefix('_')?;
        let (version, counter) = match stem.split_once('+') {
            None => (stem, None),
            Some((v, c)) => {
                let (left, done) = match c.split_once('-') {
                    None => (c, "0"),
                    Some((l, d)) => (l, d),
                };
                let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
                if !digits(left) || !digits(done) {
                    return None;
                }
                let counter = BootCounter {
                    left: left.parse().ok()?,
                    done: done.parse().ok()?,
                };
                (v, Some(counter))
            }
        };
        Some(EntryName {
            version: version.parse().ok()?,
            counter,
        })
    }

    pub fn assessment(&self) -> Assessment {
        match self.counter {
            None => Assessment::Good,
            Some(c) if c.left == 0 => Assessment::Bad,
            Some(_) => Assessment::Indeterminate,
        }
    }

    pub fn tries_left(&self) -> Option<u32> {
        self.counter.map(|c| c.left)
    }

    /// What systemd-boot renames the entry to when it picks it (one try used).
    pub fn after_try(&self) -> EntryName {
        let counter = self.counter.map(|c| match c.left {
            0 => c,
            l => BootCounter {
                left: l - 1,
                done: c.done + 1,
            },
        });
        EntryName::new(self.version.clone(), counter)
    }

    /// What `systemd-bless-boot good` renames it to.
    pub fn blessed(&self) -> EntryName {
        EntryName::new(self.version.clone(), None)
    }

    /// What `systemd-bless-boot bad` renames it to (and `rollback` for a
    /// blessed entry: +0 marks it bad for systemd-boot).
    pub fn marked_bad(&self) -> EntryName {
        let done = self.counter.map(|c| c.done).unwrap_or(0);
        EntryName::new(self.version.clone(), Some(BootCounter { left: 0, done }))
    }
}

impl fmt::Display for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.counter {
            None => write!(f, "{IMAGE_ID}_{}.conf", self.version),
            Some(BootCounter { left, done: 0 }) => {
                write!(f, "{IMAGE_ID}_{}+{left}.conf", self.version)
            }
            Some(BootCounter { left, done }) => {
                write!(f, "{IMAGE_ID}_{}+{left}-{done}.conf", self.version)
            }
        }
    }
}

/// The entry systemd-boot boots when no default is set: entries with tries
/// left (or no counter) before bad ones, then the newest version first (all
/// hakube entries share one sort-key). `None` when every entry is bad: then
/// systemd-boot still boots the newest bad one, which is reported as such.
pub fn boot_choice(entries: &[EntryName]) -> Option<&EntryName> {
    entries
        .iter()
        .filter(|e| e.assessment() != Assessment::Bad)
        .max_by(|a, b| a.version.cmp(&b.version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> ImageVersion {
        s.parse().unwrap()
    }

    #[test]
    fn names_parse_and_print_back() {
        for name in [
            "hakube_20261201.202300.conf",
            "hakube_20261201.202300+3.conf",
            "hakube_20261201.202300+2-1.conf",
            "hakube_20261201.202300+0-3.conf",
        ] {
            assert_eq!(EntryName::parse(name).unwrap().to_string(), name);
        }
        for other in [
            "hakube-a+3.conf",
            "hakube_20261201.202300+x.conf",
            "hakube_20261201.202300+3-.conf",
            "debian.conf",
            "hakube_20261201.202300.conf~",
        ] {
            assert!(EntryName::parse(other).is_none(), "{other}");
        }
        let e = EntryName::parse("hakube_20261201.202300+2-1.conf").unwrap();
        assert_eq!(e.counter, Some(BootCounter { left: 2, done: 1 }));
    }

    #[test]
    fn counting_blessing_and_bad_follow_boot_assessment() {
        let fresh = EntryName::new(v("20261202.000000"), Some(BootCounter { left: 3, done: 0 }));
        assert_eq!(fresh.assessment(), Assessment::Indeterminate);
        let tried = fresh.after_try();
        assert_eq!(tried.to_string(), "hakube_20261202.000000+2-1.conf");
        assert_eq!(tried.blessed().to_string(), "hakube_20261202.000000.conf");
        assert_eq!(tried.blessed().assessment(), Assessment::Good);
        assert_eq!(
            tried.marked_bad().to_string(),
            "hakube_20261202.000000+0-1.conf"
        );
        assert_eq!(tried.marked_bad().assessment(), Assessment::Bad);
        let spent = fresh.after_try().after_try().after_try();
        assert_eq!(spent.to_string(), "hakube_20261202.000000+0-3.conf");
        assert_eq!(spent.after_try(), spent, "no try below zero");
        let first = EntryName::new(v("20261201.000000"), None);
        assert_eq!(
            first.after_try(),
            first,
            "an entry without counter is not counted"
        );
    }

    #[test]
    fn systemd_boot_picks_the_newest_entry_with_tries_left() {
        let old = EntryName::new(v("20261201.000000"), None);
        let new = EntryName::new(v("20261202.000000"), Some(BootCounter { left: 3, done: 0 }));
        assert_eq!(boot_choice(&[old.clone(), new.clone()]), Some(&new));
        let bad = new.after_try().marked_bad();
        assert_eq!(boot_choice(&[bad.clone(), old.clone()]), Some(&old));
        let spent = new.after_try().after_try().after_try();
        assert_eq!(boot_choice(&[old.clone(), spent]), Some(&old));
        assert_eq!(boot_choice(&[bad]), None);
    }
}
