//! A real OCI registry for tests (Debian's docker-registry, the CNCF
//! distribution server) with TLS from a CA made here, on 127.0.0.1 in the
//! port range 18500-18999, and small test images assembled as OCI layouts
//! and pushed with skopeo. Everything lives in the test's temp directory; the
//! registry process is killed when the handle drops.

#![allow(dead_code)]

use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Registry {
    pub dir: PathBuf,
    pub port: u16,
    /// The CA's PEM file (for --registry-ca).
    pub ca: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    // Start somewhere depending on the process so parallel test binaries
    // rarely race for the same port; bind to check it is free.
    // Each registry of this process takes its own offset: two tests binding
    // the same free port one after the other would serve each other's CA.
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let start = 18500 + ((std::process::id() as u16 % 80) * 5 + k * 37) % 500;
    for p in (start..19000).chain(18500..start) {
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no free port in 18500-18999");
}

impl Registry {
    pub fn start(dir: &Path) -> Registry {
        std::fs::create_dir_all(dir).unwrap();
        let ca = dir.join("ca.crt");
        let ext = dir.join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(Command::new("openssl")
            .args(["req", "-x509"])
            .args(ec)
            .arg("-keyout")
            .arg(dir.join("ca.key"))
            .arg("-out")
            .arg(&ca)
            .args(["-days", "2", "-subj", "/CN=hakube airgap test CA"]));
        run(Command::new("openssl")
            .args(["req"])
            .args(ec)
            .arg("-keyout")
            .arg(dir.join("server.key"))
            .arg("-out")
            .arg(dir.join("server.csr"))
            .args(["-subj", "/CN=127.0.0.1"]));
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(dir.join("server.csr"))
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(dir.join("ca.key"))
            .arg("-out")
            .arg(dir.join("server.crt"))
            .arg("-extfile")
            .arg(&ext));
        // skopeo reads a directory holding ca.crt.
        std::fs::create_dir_all(dir.join("certs.d")).unwrap();
        std::fs::copy(&ca, dir.join("certs.d/ca.crt")).unwrap();
        let mut reg = Registry {
            dir: dir.to_path_buf(),
            port: 0,
            ca,
            child: None,
        };
        reg.serve();
        reg
    }

    /// (Re)starts the server on a free port, on the same storage.
    pub fn serve(&mut self) {
        self.stop();
        let port = free_port();
        let d = self.dir.display();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\n  delete:\n    enabled: true\n  cache:\n    blobdescriptor: \"\"\nhttp:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {d}/server.crt\n    key: {d}/server.key\n"
        );
        let cfg = self.dir.join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(self.dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry (Debian package docker-registry)");
        self.child = Some(child);
        self.port = port;
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "docker-registry did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `--registry-mirror` value serving `registry` from `<host>/<registry>/...`.
    pub fn mirror_for(&self, registry: &str) -> String {
        format!("{registry}={}", self.url_for(registry))
    }

    pub fn url_for(&self, registry: &str) -> String {
        format!("https://{}/{registry}", self.host())
    }

    /// Pushes tag `tag` of the OCI layout `layout` as `<host>/<dest>` (all platforms).
    pub fn push(&self, layout: &Path, tag: &str, dest: &str) {
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--all", "--dest-cert-dir"])
            .arg(self.dir.join("certs.d"))
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{dest}", self.host())));
    }

    /// The file the registry serves blob `digest` from.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Deletes the manifest links of `repo` (the repository then has no tags).
    pub fn forget_repository(&self, repo: &str) {
        let p = self
            .dir
            .join("data/docker/registry/v2/repositories")
            .join(repo);
        std::fs::remove_dir_all(&p).unwrap();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// A test image: an OCI layout at `dir` whose tag `tag` is an index with a
/// linux/amd64 and a linux/arm64 manifest (one gzip layer each, holding
/// `/hello` with `content`). Returns (index digest, amd64 manifest digest,
/// amd64 layer digest).
pub fn make_layout(dir: &Path, tag: &str, content: &str) -> (String, String, String) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| -> (String, usize) {
        let d = sha256(b);
        std::fs::write(blobs.join(d.strip_prefix("sha256:").unwrap()), b).unwrap();
        (d, b.len())
    };
    let mut manifests = Vec::new();
    let mut amd64 = (String::new(), String::new());
    for arch in ["amd64", "arm64"] {
        let mut tar = tar::Builder::new(Vec::new());
        let body = format!("{content} ({arch})\n");
        let mut h = tar::Header::new_ustar();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        tar.append_data(&mut h, "hello", body.as_bytes()).unwrap();
        let raw = tar.into_inner().unwrap();
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&raw).unwrap();
        let layer = gz.finish().unwrap();
        let (layer_d, layer_n) = put(&layer);
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["/hello"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(&raw)]},
        });
        let (cfg_d, cfg_n) = put(&serde_json::to_vec(&config).unwrap());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_d, "size": cfg_n},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_d, "size": layer_n}],
        });
        let (m_d, m_n) = put(&serde_json::to_vec(&manifest).unwrap());
        if arch == "amd64" {
            amd64 = (m_d.clone(), layer_d.clone());
        }
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": m_d, "size": m_n,
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let (i_d, i_n) = put(&serde_json::to_vec(&index).unwrap());
    // The layout's own index: this tag names the image index. Other tags in
    // an existing layout are kept.
    let idx_path = dir.join("index.json");
    let mut top: serde_json::Value = std::fs::read(&idx_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| serde_json::json!({"schemaVersion": 2, "manifests": []}));
    let list = top["manifests"].as_array_mut().unwrap();
    list.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
    list.push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": i_d, "size": i_n,
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }));
    std::fs::write(&idx_path, serde_json::to_vec(&top).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    (i_d, amd64.0, amd64.1)
}
