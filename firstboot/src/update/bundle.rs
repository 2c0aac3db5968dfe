//! An update bundle (what `hakube-build` writes under `update/<version>/`):
//! the root image, kernel, initrd and boot entry of one version, listed with
//! their SHA-256 in SHA256SUMS. Read from a directory or an http(s) URL,
//! verified, checked against the slot, and staged for systemd-sysupdate.

use crate::BadInput;
use anyhow::{bail, Context, Result};
use hakube_os_layout::{self as layout, bundle, ImageVersion};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// Where a bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Dir(PathBuf),
    Url(String),
}

impl Source {
    pub fn parse(s: &str) -> Source {
        if s.starts_with("http://") || s.starts_with("https://") {
            Source::Url(s.trim_end_matches('/').to_string())
        } else {
            Source::Dir(PathBuf::from(s))
        }
    }

    fn describe(&self, name: &str) -> String {
        match self {
            Source::Dir(d) => d.join(name).display().to_string(),
            Source::Url(u) => format!("{u}/{name}"),
        }
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read>> {
        match self {
            Source::Dir(d) => {
                let p = d.join(name);
                let f = fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?;
                Ok(Box::new(f))
            }
            Source::Url(u) => {
                let url = format!("{u}/{name}");
                let resp = reqwest::blocking::Client::builder()
                    .timeout(None)
                    .build()
                    .context("setting up the HTTP client")?
                    .get(&url)
                    .send()
                    .with_context(|| format!("fetching {url}"))?;
                if !resp.status().is_success() {
                    bail!("fetching {url}: HTTP {}", resp.status());
                }
                Ok(Box::new(resp))
            }
        }
    }
}

/// One version's files in a bundle, with their expected SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub version: ImageVersion,
    /// The PARTUUID its root gets (from the root file's name).
    pub root_uuid: Uuid,
    /// file name -> sha256 (hex)
    pub files: BTreeMap<String, String>,
}

impl Bundle {
    pub fn root_file(&self) -> String {
        bundle::root(&self.version, &self.root_uuid)
    }
}

/// Parses SHA256SUMS (`HEX  NAME` or `HEX *NAME` lines).
pub fn parse_sums(text: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (hash, name) = line
            .split_once(' ')
            .map(|(h, n)| (h, n.trim_start_matches(' ').trim_start_matches('*')))
            .with_context(|| format!("SHA256SUMS line {}: expected `HEX  NAME`", i + 1))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("SHA256SUMS line {}: {hash:?} is not a SHA-256", i + 1);
        }
        if name.is_empty() || name.contains('/') {
            bail!("SHA256SUMS line {}: bad file name {name:?}", i + 1);
        }
        out.insert(name.to_string(), hash.to_lowercase());
    }
    Ok(out)
}

/// The newest version whose four files are all listed.
pub fn newest_complete(sums: &BTreeMap<String, String>) -> Option<Bundle> {
    let mut found: Vec<Bundle> = sums
        .keys()
        .filter_map(|name| {
            let rest = name
                .strip_prefix(layout::IMAGE_ID)?
                .strip_prefix('_')?
                .strip_suffix(".root.erofs")?;
            let (v, u) = rest.split_once('_')?;
            let version: ImageVersion = v.parse().ok()?;
            let root_uuid = Uuid::parse_str(u).ok()?;
            let names = [
                bundle::root(&version, &root_uuid),
                bundle::kernel(&version),
                bundle::initrd(&version),
                bundle::entry(&version),
            ];
            let files = names
                .iter()
                .map(|n| sums.get(n).map(|h| (n.clone(), h.clone())))
                .collect::<Option<BTreeMap<_, _>>>()?;
            Some(Bundle {
                version,
                root_uuid,
                files,
            })
        })
        .collect();
    found.sort_by(|a, b| a.version.cmp(&b.version));
    found.pop()
}

/// Reads the bundle's index: which version it offers.
pub fn index(src: &Source) -> Result<Bundle> {
    let mut text = String::new();
    src.open(bundle::SHA256SUMS)?
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", src.describe(bundle::SHA256SUMS)))?;
    let sums = parse_sums(&text)
        .map_err(|e| BadInput(format!("{}: {e:#}", src.describe(bundle::SHA256SUMS))))?;
    newest_complete(&sums).ok_or_else(|| {
        BadInput(format!(
            "{} lists no complete hakube update (root image, kernel, initrd and entry of one version)",
            src.describe(bundle::SHA256SUMS)
        ))
        .into()
    })
}

/// Copies the bundle's files into `stage` (emptied first), verifying each
/// SHA-256 and the entry's root; nothing stays staged when a check fails.
/// `slot_size`: the bytes of the root slot it will be written to.
pub fn stage(src: &Source, b: &Bundle, stage: &Path, slot_size: u64) -> Result<()> {
    if stage.exists() {
        fs::remove_dir_all(stage).with_context(|| format!("emptying {}", stage.display()))?;
    }
    let partial = stage.with_extension("partial");
    if partial.exists() {
        fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let result = fetch_all(src, b, &partial, slot_size);
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&partial);
        return Err(e);
    }
    fs::rename(&partial, stage)
        .with_context(|| format!("moving {} to {}", partial.display(), stage.display()))?;
    Ok(())
}

fn fetch_all(src: &Source, b: &Bundle, dir: &Path, slot_size: u64) -> Result<()> {
    for (name, want) in &b.files {
        let dest = dir.join(name);
        let limit = if *name == b.root_file() {
            Some(slot_size)
        } else {
            None
        };
        let got = copy_hashing(src.open(name)?, &dest, limit)
            .with_context(|| format!("copying {} to {}", src.describe(name), dest.display()))?;
        if &got != want {
            return Err(BadInput(format!(
                "{}: SHA-256 is {got}, SHA256SUMS says {want}; the update is refused",
                src.describe(name)
            ))
            .into());
        }
    }
    let entry_path = dir.join(bundle::entry(&b.version));
    let entry = fs::read_to_string(&entry_path)
        .with_context(|| format!("reading {}", entry_path.display()))?;
    let want = format!("root=PARTUUID={}", b.root_uuid);
    if !entry
        .lines()
        .any(|l| l.starts_with("options ") && l.contains(&want))
    {
        return Err(BadInput(format!(
            "{}: the entry does not boot its own root ({want}); the update is refused \
             (an entry must name its root, systemd#32653)",
            src.describe(&bundle::entry(&b.version))
        ))
        .into());
    }
    Ok(())
}

/// Too big for the slot.
#[derive(Debug, thiserror::Error)]
#[error("the root image is larger than the root slot ({limit} bytes); the update is refused")]
pub struct TooBig {
    pub limit: u64,
}

fn copy_hashing(mut from: Box<dyn Read>, to: &Path, limit: Option<u64>) -> Result<String> {
    let mut out = fs::File::create(to).with_context(|| format!("creating {}", to.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf).context("reading")?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if let Some(l) = limit {
            if total > l {
                return Err(BadInput(TooBig { limit: l }.to_string()).into());
            }
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .with_context(|| format!("writing {}", to.display()))?;
    }
    out.sync_all()
        .with_context(|| format!("flushing {}", to.display()))?;
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn sums(v: &str, u: &str) -> String {
        format!(
            "{H}  hakube_{v}_{u}.root.erofs\n{H}  hakube_{v}.vmlinuz\n{H} *hakube_{v}.initrd\n{H}  hakube_{v}.conf\n"
        )
    }

    #[test]
    fn index_picks_the_newest_complete_version() {
        let u = "6d2f9e1a-0000-4000-8000-000000000001";
        let mut text = sums("20261201.000000", u);
        text.push_str(&sums("20261202.000000", u));
        // A newer version with a file missing is not offered.
        text.push_str(&format!("{H}  hakube_20261203.000000_{u}.root.erofs\n"));
        let b = newest_complete(&parse_sums(&text).unwrap()).unwrap();
        assert_eq!(b.version.as_str(), "20261202.000000");
        assert_eq!(b.root_uuid.to_string(), u);
        assert_eq!(b.files.len(), 4);
        assert!(newest_complete(&parse_sums("").unwrap()).is_none());
    }

    #[test]
    fn bad_sums_are_refused() {
        assert!(parse_sums("nothex  f\n").is_err());
        assert!(parse_sums(&format!("{H}  ../etc/passwd\n")).is_err());
        assert!(parse_sums(&format!("{H}\n")).is_err());
    }
}
