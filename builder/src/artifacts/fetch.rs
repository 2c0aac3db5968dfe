//! Getting bytes: mapping an upstream URL to where this build reads it (the
//! upstream itself or a mirror), and the transports (HTTP(S), local files).

use super::Source;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

/// How long to wait for a TCP/TLS connection: long enough for a slow link,
/// short enough that an offline machine fails in seconds, not minutes.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a single read may stall before the download is abandoned.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Where one file is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Http(String),
    File(PathBuf),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Http(u) => f.write_str(u),
            Location::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Maps `https://HOST/PATH` to its location under `source`:
/// `<mirror>/HOST/PATH` for a mirror (directory, `file://` or `http(s)://`).
pub fn locate(source: &Source, upstream_url: &str) -> Result<Location> {
    let rest = upstream_url
        .strip_prefix("https://")
        .with_context(|| format!("catalogue URL {upstream_url} is not https"))?;
    // host/path, each part a plain name: a mirror directory joined with it
    // stays inside the mirror (an absolute path or `..` would leave it).
    let plain = !rest.contains('\0')
        && rest
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if !plain {
        bail!("URL {upstream_url:?}: expected https://HOST/PATH with plain path parts (no empty, `.` or `..` part)");
    }
    match source {
        Source::Upstream => Ok(Location::Http(upstream_url.to_string())),
        Source::Mirror(m) => {
            if m.starts_with("http://") || m.starts_with("https://") {
                Ok(Location::Http(format!(
                    "{}/{rest}",
                    m.trim_end_matches('/')
                )))
            } else {
                let dir = m.strip_prefix("file://").unwrap_or(m);
                if dir.is_empty() {
                    bail!("--artifacts {m:?}: a directory or an http(s):// URL expected");
                }
                Ok(Location::File(PathBuf::from(dir).join(rest)))
            }
        }
    }
}

/// Reads one location into a writer. A trait so tests can put a fake network
/// in front of the real one.
pub trait Transport {
    /// Copies the whole body of `loc` into `out`, reporting `(done, total)`
    /// through `progress`. Returns the byte count. A short body is an error.
    fn get(
        &self,
        loc: &Location,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<u64>;
}

/// The real transport: reqwest (rustls) for HTTP(S), std::fs for files.
pub struct DefaultTransport {
    client: std::sync::OnceLock<std::result::Result<reqwest::blocking::Client, String>>,
}

impl Default for DefaultTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl DefaultTransport {
    pub fn new() -> Self {
        DefaultTransport {
            client: std::sync::OnceLock::new(),
        }
    }

    fn client(&self) -> Result<&reqwest::blocking::Client> {
        // Built on first HTTP use: a fully cached build never starts the TLS stack.
        let c = self.client.get_or_init(|| {
            reqwest::blocking::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                // In the blocking client this bounds the wait for the response
                // head and for each read of the body, not the whole download.
                .timeout(READ_TIMEOUT)
                .user_agent(concat!("hakube-build/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("{e:#}"))
        });
        c.as_ref()
            .map_err(|e| anyhow::anyhow!("setting up the HTTP client: {e}"))
    }
}

impl Transport for DefaultTransport {
    fn get(
        &self,
        loc: &Location,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<u64> {
        match loc {
            Location::File(p) => {
                let mut f =
                    std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
                let total = f.metadata().ok().map(|m| m.len());
                copy_with_progress(&mut f, out, total, progress)
                    .with_context(|| format!("reading {}", p.display()))
            }
            Location::Http(url) => {
                let resp = self.client()?.get(url).send().map_err(describe_reqwest)?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(HttpStatus(status.as_u16()).into());
                }
                let total = resp.content_length();
                let mut body = resp;
                let n = copy_with_progress(&mut body, out, total, progress)
                    .context("reading the response body")?;
                if let Some(t) = total {
                    if n != t {
                        bail!("the download ended after {n} of {t} bytes");
                    }
                }
                Ok(n)
            }
        }
    }
}

/// The server answered, but not with the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpStatus(pub u16);

impl std::fmt::Display for HttpStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = reqwest::StatusCode::from_u16(self.0)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        write!(f, "the server answered HTTP {} {reason}", self.0)
    }
}

impl std::error::Error for HttpStatus {}

/// Whether a transport error means the host could not be reached at all
/// (DNS, refused, timeout), rather than an answer without the file.
pub fn is_unreachable(err: &anyhow::Error) -> bool {
    !err.chain()
        .any(|e| e.downcast_ref::<HttpStatus>().is_some())
}

/// reqwest's Display hides the cause (DNS, refused, timeout); show the chain.
fn describe_reqwest(e: reqwest::Error) -> anyhow::Error {
    let kind = if e.is_timeout() {
        "timed out: "
    } else if e.is_connect() {
        "cannot connect: "
    } else {
        ""
    };
    let mut msg = format!("{kind}{e}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    anyhow::anyhow!(msg)
}

fn copy_with_progress(
    r: &mut dyn Read,
    w: &mut dyn Write,
    total: Option<u64>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        w.write_all(&buf[..n])?;
        done += n as u64;
        progress(done, total);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "https://dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubeadm";

    #[test]
    fn mirror_layout() {
        assert_eq!(
            locate(&Source::Upstream, K).unwrap(),
            Location::Http(K.into())
        );
        assert_eq!(
            locate(&Source::Mirror("/srv/m".into()), K).unwrap(),
            Location::File("/srv/m/dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubeadm".into())
        );
        assert_eq!(
            locate(&Source::Mirror("file:///srv/m/".into()), K).unwrap(),
            Location::File("/srv/m/dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubeadm".into())
        );
        assert_eq!(
            locate(&Source::Mirror("http://10.0.0.1:8080/k8s/".into()), K).unwrap(),
            Location::Http(
                "http://10.0.0.1:8080/k8s/dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubeadm".into()
            )
        );
        assert!(locate(&Source::Upstream, "http://insecure/x").is_err());
    }

    #[test]
    fn a_url_cannot_lead_out_of_the_mirror_directory() {
        let m = Source::Mirror("/srv/m".into());
        for bad in [
            "https:////etc/passwd",
            "https://",
            "https://dl.k8s.io/../../etc/passwd",
            "https://dl.k8s.io/./x",
            "https://dl.k8s.io/a\0b",
        ] {
            let e = locate(&m, bad).unwrap_err().to_string();
            assert!(e.contains("plain path parts"), "{bad}: {e}");
            assert!(locate(&Source::Upstream, bad).is_err(), "{bad}");
        }
    }
}
