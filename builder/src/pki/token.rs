//! The kubeadm bootstrap token nodes join with: `[a-z0-9]{6}.[a-z0-9]{16}`
//! (the format kubeadm and the bootstrap-token authenticator accept).

use rand::Rng;
use std::fmt;
use std::str::FromStr;

/// A validated bootstrap token `abcdef.0123456789abcdef`.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken(String);

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

impl BootstrapToken {
    /// A fresh random token from the operating system's CSPRNG.
    pub fn generate() -> BootstrapToken {
        let mut rng = rand::rng();
        let mut pick = |n: usize| -> String {
            (0..n)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                .collect()
        };
        let id = pick(6);
        let secret = pick(16);
        BootstrapToken(format!("{id}.{secret}"))
    }

    /// The whole token, `id.secret`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The public part (`abcdef`), also the name suffix of its Secret.
    pub fn id(&self) -> &str {
        &self.0[..6]
    }
}

impl FromStr for BootstrapToken {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok_part = |p: &str, len: usize| {
            p.len() == len
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        match s.split_once('.') {
            Some((id, secret)) if ok_part(id, 6) && ok_part(secret, 16) => {
                Ok(BootstrapToken(s.to_string()))
            }
            _ => Err(
                "not a bootstrap token: 6 and 16 characters of [a-z0-9] joined by '.' expected"
                    .to_string(),
            ),
        }
    }
}

impl fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Never print the secret half by accident (logs, panics).
impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapToken({}.<redacted>)", self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_good_tokens() {
        for good in [
            "abcdef.0123456789abcdef",
            "000000.0000000000000000",
            "zzzzzz.zzzzzzzzzzzzzzzz",
            "a1b2c3.d4e5f6g7h8i9j0k1",
        ] {
            let t: BootstrapToken = good.parse().unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(t.as_str(), good);
            assert_eq!(t.id(), &good[..6]);
        }
    }

    #[test]
    fn refuses_bad_tokens() {
        for bad in [
            "",
            "abcdef",
            "abcdef.",
            ".0123456789abcdef",
            "abcde.0123456789abcdef",   // id too short
            "abcdefg.0123456789abcdef", // id too long
            "abcdef.0123456789abcde",   // secret too short
            "abcdef.0123456789abcdef0", // secret too long
            "ABCDEF.0123456789abcdef",  // upper case
            "abcdef.0123456789ABCDEF",
            "abcdef-0123456789abcdef", // wrong separator
            "abcdef.0123456789abcde_",
            "abc def.0123456789abcdef",
            "abcdef.0123456789.abcdef",
            "äbcdef.0123456789abcdef",
            " abcdef.0123456789abcdef",
            "abcdef.0123456789abcdef\n",
        ] {
            assert!(bad.parse::<BootstrapToken>().is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn generated_tokens_are_valid_and_differ() {
        let a = BootstrapToken::generate();
        let b = BootstrapToken::generate();
        assert!(a.as_str().parse::<BootstrapToken>().is_ok(), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn debug_hides_the_secret() {
        let t: BootstrapToken = "abcdef.0123456789abcdef".parse().unwrap();
        let shown = format!("{t:?}");
        assert!(shown.contains("abcdef"));
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }
}
