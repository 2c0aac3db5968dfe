//! The rendered haproxy configuration, run by the real haproxy against a
//! stand-in API server (`openssl s_server` over TLS on loopback) whose
//! `/readyz` answers 500: haproxy's checks take every master out of rotation,
//! and a client connecting to the node-local balancer still reaches the API
//! server through the unchecked last-resort servers instead of being cut off.
//! On a first boot under QEMU's TCG the one master's /readyz failed on a
//! 2-second etcd check, haproxy logged "backend has no server available" and
//! the VIP answered EOF.
//!
//! Needs haproxy and openssl (scripts/setup-host installs both).

#[path = "common/host.rs"]
mod host;
#[path = "common/render.rs"]
mod render_support;

use hakube_build::render::{self, paths};
use hakube_build::spec;
use hakube_build::tree::FileEntry;
use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use host::require;
use render_support::fixed_creds;

/// Children killed when the test ends, whatever the outcome.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTPS request through `port` with `openssl s_client`: what came back.
fn request(port: u16, path: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes());
    let mut out = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    let _ = child.wait();
    out
}

#[test]
fn with_no_api_server_ready_the_balancer_still_reaches_them() {
    require("haproxy", "haproxy");
    require("openssl", "openssl");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/render/k8s-1.37.yaml");
    let cluster = spec::load(Some(&fixture)).unwrap();
    let creds = fixed_creds();
    let worker = cluster.node("worker-1").unwrap();
    let tree = render::config_tree(&cluster, worker, &creds, &render_support::upstream()).unwrap();
    let Some(FileEntry::File { contents, .. }) = tree.get(paths::HAPROXY_CONFIG) else {
        panic!("worker-1 has no haproxy config");
    };
    let rendered = String::from_utf8(contents.clone()).unwrap();

    // The stand-in API server: TLS, /readyz answers 500 (s_server -HTTP
    // sends the file ./readyz as the whole response).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gen = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args([
            "-subj",
            "/CN=kube-apiserver",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    std::fs::write(
        d.join("readyz"),
        "HTTP/1.0 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    let api = free_port();
    let mut procs = Procs(Vec::new());
    procs.0.push(
        Command::new("openssl")
            .args([
                "s_server", "-quiet", "-HTTP", "-cert", "cert.pem", "-key", "key.pem",
            ])
            .arg("-accept")
            .arg(format!("127.0.0.1:{api}"))
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // The rendered config with the masters' addresses pointed at the
    // stand-in, the local frontend on a free port, and checks every 1 s
    // instead of 5 s so the test does not wait 15 s for `fall 3`.
    let lb = free_port();
    let mut cfg = rendered.replace("bind 127.0.0.1:7443", &format!("bind 127.0.0.1:{lb}"));
    cfg = cfg.replace("inter 5s", "inter 1s");
    for m in cluster.masters() {
        let from = format!("{}:6443", m.address().unwrap());
        assert!(cfg.contains(&from), "{from} not in:\n{rendered}");
        cfg = cfg.replace(&from, &format!("127.0.0.1:{api}"));
    }
    let cfg_path = d.join("haproxy.cfg");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let log_path = d.join("haproxy.log");
    procs.0.push(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdout(std::fs::File::create(&log_path).unwrap())
            .stderr(std::fs::File::create(d.join("haproxy.err")).unwrap())
            .spawn()
            .unwrap(),
    );

    // Every checked server goes DOWN on the 500s.
    let start = Instant::now();
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default()
            + &std::fs::read_to_string(d.join("haproxy.err")).unwrap_or_default();
        if log.contains("Running on backup") {
            break log;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "haproxy never took the unready masters out of rotation:\n{log}\n{cfg}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Long enough for any server still checked to fail `fall 3` times at
    // `inter 1s` (a last-resort server that were checked would go DOWN too).
    std::thread::sleep(Duration::from_secs(6));
    let log = log
        + &std::fs::read_to_string(&log_path).unwrap_or_default()
        + &std::fs::read_to_string(d.join("haproxy.err")).unwrap_or_default();
    let down = log
        .lines()
        .filter(|l| l.contains(" is DOWN"))
        .map(|l| l.split(" is DOWN").next().unwrap_or_default())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert_eq!(down, cluster.masters().count(), "{log}");
    assert!(!log.contains("has no server available"), "{log}");

    // A client of the node-local balancer still reaches the API server.
    let answer = request(lb, "/readyz");
    assert!(
        answer.starts_with("HTTP/1.0 500"),
        "through the balancer with no server ready: {answer:?}\n{log}"
    );
}
