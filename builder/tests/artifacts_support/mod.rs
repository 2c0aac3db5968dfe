//! Shared by the artifacts_* tests: fake upstream content for a catalogue and
//! a tiny HTTP/1.1 server on 127.0.0.1 that serves it in the mirror layout
//! (`/<host>/<path>`), can cut a body short, and counts requests.
#![allow(dead_code)]

use hakube_build::artifacts::catalog::{ArtifactSpec, Checksum, Layout, Members};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Mirror-relative path of an upstream URL: `dl.k8s.io/release/...`.
pub fn rel(url: &str) -> String {
    url.strip_prefix("https://").expect("https url").to_string()
}

/// Files of a fake upstream, keyed by mirror-relative path.
#[derive(Debug, Clone, Default)]
pub struct Content {
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Content {
    /// Fake bodies for every spec, plus checksum files in each upstream's format.
    pub fn for_specs(specs: &[ArtifactSpec]) -> Content {
        let mut c = Content::default();
        for s in specs {
            let body = fake_body(s);
            let hex = sha256_hex(&body);
            c.files.insert(rel(&s.url), body);
            if let Checksum::File { url, entry } = &s.checksum {
                let text = c.files.entry(rel(url)).or_default();
                if url.starts_with("https://dl.k8s.io/") {
                    // dl.k8s.io: the bare digest.
                    text.extend_from_slice(format!("{hex}\n").as_bytes());
                } else {
                    // sha256sum format, with a neighbour to skip over.
                    text.extend_from_slice(
                        format!("{}  {entry}.other-arch\n{hex}  {entry}\n", "0".repeat(64))
                            .as_bytes(),
                    );
                }
            }
        }
        c
    }

    pub fn body(&self, url: &str) -> &[u8] {
        &self.files[&rel(url)]
    }

    /// Writes the files under `dir` (a directory mirror).
    pub fn write_to(&self, dir: &Path) {
        for (p, b) in &self.files {
            let f = dir.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, b).unwrap();
        }
    }
}

/// A plain file: some text, large enough to arrive in several reads.
/// A tarball: the members the layout installs, under its prefix, plus
/// decoys that must not be installed.
pub fn fake_body(s: &ArtifactSpec) -> Vec<u8> {
    match &s.layout {
        Layout::File { .. } => {
            let line = format!("fake {} {} payload\n", s.name, s.version);
            line.repeat(300_000 / line.len()).into_bytes()
        }
        Layout::TarGz {
            prefix,
            members,
            required,
            ..
        } => {
            let mut names: Vec<String> = required.iter().map(|s| s.to_string()).collect();
            if let Members::AllExcept(skip) = members {
                names.push("extra-tool".into());
                names.extend(skip.iter().map(|s| s.to_string()));
            }
            let mut entries: Vec<(String, Vec<u8>)> = names
                .iter()
                .map(|n| {
                    let path = if prefix.is_empty() {
                        format!("./{n}")
                    } else {
                        format!("{prefix}/{n}")
                    };
                    (
                        path,
                        format!("#!/bin/sh\necho {n} {}\n", s.version).into_bytes(),
                    )
                })
                .collect();
            entries.push(("docs/README".into(), b"not installed\n".to_vec()));
            tar_gz(&entries)
        }
    }
}

/// A gzip tarball of regular files (mode 0644, mtime 1700000000).
pub fn tar_gz(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        set_raw_name(&mut h, path);
        h.set_cksum();
        b.append(&h, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// Writes the name bytes directly, so tests can build archives with `..`
/// or absolute names (which `Header::set_path` refuses).
fn set_raw_name(h: &mut tar::Header, path: &str) {
    let name = &mut h.as_old_mut().name;
    name.fill(0);
    name[..path.len()].copy_from_slice(path.as_bytes());
}

/// How the server answers one path.
#[derive(Debug, Clone)]
pub enum Reply {
    Full(Vec<u8>),
    /// Announces the full length but closes after `cut` bytes.
    Truncated(Vec<u8>, usize),
}

pub struct Server {
    pub port: u16,
    pub replies: Arc<Mutex<BTreeMap<String, Reply>>>,
    /// Paths requested, in order.
    pub log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(content: &Content) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let replies: BTreeMap<String, Reply> = content
            .files
            .iter()
            .map(|(p, b)| (format!("/{p}"), Reply::Full(b.clone())))
            .collect();
        let replies = Arc::new(Mutex::new(replies));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, l, s) = (replies.clone(), log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (r, l) = (r.clone(), l.clone());
                std::thread::spawn(move || serve(conn, &r, &l));
            }
        });
        Server {
            port,
            replies,
            log,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, upstream_url: &str, reply: Reply) {
        self.replies
            .lock()
            .unwrap()
            .insert(format!("/{}", rel(upstream_url)), reply);
    }

    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Stops accepting; the port is closed afterwards.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(mut conn: TcpStream, replies: &Mutex<BTreeMap<String, Reply>>, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => break,
            Ok(_) if h == "\r\n" || h == "\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    log.lock().unwrap().push(path.clone());
    let reply = replies.lock().unwrap().get(&path).cloned();
    let _ = match reply {
        None => conn.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
        ),
        Some(Reply::Full(body)) => conn
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .and_then(|_| conn.write_all(&body)),
        Some(Reply::Truncated(body, cut)) => conn
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .and_then(|_| conn.write_all(&body[..cut])),
    };
    let _ = conn.flush();
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

/// Every file name in the cache's sha256 directory.
pub fn cache_names(cache: &Path) -> Vec<String> {
    let dir = cache.join("artifacts/sha256");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
