//! Boot-test support: a private network namespace with a bridge and a tap,
//! QEMU with OVMF inside it, and a qemu-guest-agent client (guest-exec).
//! Everything started here is torn down on drop (also on panic); QEMU also
//! dies with the test process (parent-death signal).

#![allow(dead_code)]

use base64::Engine;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A private network namespace with a bridge `br0` and taps enslaved to it;
/// deleted on drop (which also removes the bridge and the taps).
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `hakube-test-<pid>` with br0 and tap0 (the single-VM boot test).
    pub fn new() -> Netns {
        Netns::create(
            &format!("hakube-test-{}", std::process::id()),
            &["tap0"],
            None,
        )
    }

    /// `ip netns add NAME`, then br0 (with `bridge_addr`, e.g.
    /// `192.168.122.1/24`, so the host side of the namespace can reach the
    /// VMs) and one tap per name. Nothing links the namespace to the host's
    /// own network, so VM traffic cannot leave it.
    pub fn create(name: &str, taps: &[&str], bridge_addr: Option<&str>) -> Netns {
        run(Command::new("ip").args(["netns", "add", name]));
        let ns = Netns { name: name.into() };
        let mut steps: Vec<Vec<&str>> = vec![
            vec!["link", "set", "lo", "up"],
            vec!["link", "add", "br0", "type", "bridge"],
        ];
        for tap in taps {
            steps.push(vec!["tuntap", "add", "dev", tap, "mode", "tap"]);
            steps.push(vec!["link", "set", tap, "master", "br0"]);
            steps.push(vec!["link", "set", tap, "up"]);
        }
        if let Some(addr) = bridge_addr {
            steps.push(vec!["addr", "add", addr, "dev", "br0"]);
        }
        steps.push(vec!["link", "set", "br0", "up"]);
        for args in steps {
            run(Command::new("ip").arg("-n").arg(&ns.name).args(args));
        }
        ns
    }

    /// `ip netns exec NAME PROGRAM`: a command run inside the namespace.
    pub fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// How to start one VM: its disk, NIC and size.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Names the files in the work directory (`<tag>-serial.log`, ...).
    pub tag: String,
    pub disk: PathBuf,
    pub mac: String,
    /// The tap in the namespace this VM's NIC is plugged into.
    pub tap: String,
    pub memory_mib: u32,
    pub cpus: u32,
    /// More disks, attached read-only (virtio, raw) after the boot disk
    /// (`/dev/vdb`, ...).
    pub extra_disks: Vec<PathBuf>,
}

/// A running VM; killed on drop.
pub struct Vm {
    child: Child,
    pub qga: PathBuf,
    pub serial: PathBuf,
    pub config: VmConfig,
}

impl Vm {
    pub fn start(ns: &Netns, accel: Accel, disk: &Path, mac: &str, dir: &Path, tag: &str) -> Vm {
        Vm::start_with(ns, accel, disk, mac, dir, tag, &[])
    }

    /// Like [`Vm::start`], with more disks attached read-only.
    pub fn start_with(
        ns: &Netns,
        accel: Accel,
        disk: &Path,
        mac: &str,
        dir: &Path,
        tag: &str,
        extra_disks: &[&Path],
    ) -> Vm {
        let config = VmConfig {
            tag: tag.into(),
            disk: disk.into(),
            mac: mac.into(),
            tap: "tap0".into(),
            memory_mib: 2048,
            cpus: 2,
            extra_disks: extra_disks.iter().map(|d| d.to_path_buf()).collect(),
        };
        Vm::launch(ns, accel, config, dir)
    }

    /// Powers the VM on (fresh UEFI variables, serial console appended to
    /// `<tag>-serial.log`, guest agent on `<tag>-qga.sock`).
    pub fn launch(ns: &Netns, accel: Accel, config: VmConfig, dir: &Path) -> Vm {
        let tag = &config.tag;
        let vars = dir.join(format!("{tag}-OVMF_VARS.fd"));
        if !vars.exists() {
            std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).expect("ovmf installed");
        }
        let qga = dir.join(format!("{tag}-qga.sock"));
        let _ = std::fs::remove_file(&qga);
        let serial = dir.join(format!("{tag}-serial.log"));
        // TCG with one host thread per vCPU (MTTCG): measured here, a guest
        // with 2 vCPUs boots to its agent in 37 s instead of 74 s and runs
        // two CPU-bound processes in half the time; a single-threaded TCG
        // VM never uses more than one host core, which starved the master.
        let (accel_s, cpu) = match accel {
            Accel::Kvm => ("kvm", "host"),
            Accel::Tcg => ("tcg,thread=multi", "max"),
        };
        let qemu_err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{tag}-qemu.err")))
            .unwrap();
        let mut cmd = ns.exec("qemu-system-x86_64");
        cmd.args(["-name", tag])
            .args(["-machine", "q35"])
            .args(["-accel", accel_s])
            .args(["-cpu", cpu])
            .args(["-m", &config.memory_mib.to_string()])
            .args(["-smp", &config.cpus.to_string()])
            .args([
                "-drive",
                "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
            ])
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                vars.display()
            ))
            // cache=unsafe: QEMU does not pass the guest's flushes on to the
            // host's disk (a guest fsync took 8 ms instead of 3 here, and etcd
            // fsyncs on every write). Every write the guest completed is in
            // the host's page cache the moment it completes, so killing QEMU
            // (the scenarios' power cut) loses nothing it would not lose
            // with the default writeback mode; only a host crash would.
            .arg("-drive")
            .arg(format!(
                "file={},if=virtio,format=qcow2,cache=unsafe",
                config.disk.display()
            ))
            .args(config.extra_disks.iter().flat_map(|d| {
                [
                    "-drive".to_string(),
                    format!("file={},if=virtio,format=raw,readonly=on", d.display()),
                ]
            }))
            .arg("-netdev")
            .arg(format!(
                "tap,id=n0,ifname={},script=no,downscript=no",
                config.tap
            ))
            .arg("-device")
            .arg(format!("virtio-net-pci,netdev=n0,mac={}", config.mac))
            .arg("-chardev")
            .arg(format!(
                "socket,id=qga0,path={},server=on,wait=off",
                qga.display()
            ))
            .args(["-device", "virtio-serial-pci"])
            .args([
                "-device",
                "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            ])
            .arg("-chardev")
            .arg(format!("file,id=ser0,path={},append=on", serial.display()))
            .args(["-serial", "chardev:ser0"])
            .args(["-display", "none", "-monitor", "none"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(qemu_err));
        // `ip netns exec` execs QEMU in place: if this test process dies
        // without unwinding (SIGKILL, abort), the kernel kills QEMU too.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().expect("starting qemu-system-x86_64");
        Vm {
            child,
            qga,
            serial,
            config,
        }
    }

    /// Pulls the plug: QEMU is killed, the disk keeps what reached it.
    pub fn power_off(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn serial_tail(&self, lines: usize) -> String {
        let s = std::fs::read_to_string(&self.serial).unwrap_or_default();
        let v: Vec<&str> = s.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    /// The first line of the serial log where the guest kernel reported a
    /// crash (an oops, a BUG, a panic), if any: such a guest cannot be
    /// trusted for anything after it.
    pub fn kernel_crash(&self) -> Option<String> {
        let s = std::fs::read_to_string(&self.serial).unwrap_or_default();
        s.lines()
            .find(|l| {
                ["Oops:", "BUG:", "Kernel panic"]
                    .iter()
                    .any(|m| l.contains(m))
            })
            .map(str::to_string)
    }

    /// Waits until the guest agent answers, up to `limit`.
    pub fn wait_agent(&mut self, limit: Duration) -> Result<Agent, String> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.exited() {
                return Err("qemu exited".into());
            }
            if let Ok(mut a) = Agent::connect(&self.qga) {
                if a.sync(Duration::from_secs(5)).is_ok() {
                    return Ok(a);
                }
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        Err(format!("no guest agent within {limit:?}"))
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A qemu-guest-agent client over the virtio-serial channel.
pub struct Agent {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

impl Agent {
    pub fn connect(path: &Path) -> std::io::Result<Agent> {
        let stream = UnixStream::connect(path)?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Agent {
            stream,
            reader,
            next_id: std::process::id() as u64 * 1000,
        })
    }

    /// guest-sync: discards stale replies left in the channel.
    pub fn sync(&mut self, wait: Duration) -> Result<(), String> {
        self.next_id += 1;
        let id = self.next_id;
        let req = serde_json::json!({"execute": "guest-sync", "arguments": {"id": id}});
        self.send(&req)?;
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            let v = self.recv(deadline)?;
            if v["return"] == serde_json::json!(id) {
                return Ok(());
            }
        }
        Err("guest-sync timed out".into())
    }

    fn send(&mut self, v: &serde_json::Value) -> Result<(), String> {
        let mut line = v.to_string();
        line.push('\n');
        self.stream
            .write_all(line.as_bytes())
            .map_err(|e| e.to_string())
    }

    fn recv(&mut self, deadline: Instant) -> Result<serde_json::Value, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.stream
            .set_read_timeout(Some(left.max(Duration::from_millis(50))))
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("agent channel closed".into());
            }
            let t = line.trim_start_matches('\u{ff}').trim();
            if t.is_empty() {
                continue;
            }
            return serde_json::from_str(t).map_err(|e| format!("{e}: {t}"));
        }
    }

    fn call(&mut self, v: serde_json::Value) -> Result<serde_json::Value, String> {
        self.send(&v)?;
        let r = self.recv(Instant::now() + Duration::from_secs(30))?;
        if let Some(e) = r.get("error") {
            return Err(e.to_string());
        }
        Ok(r["return"].clone())
    }

    /// Runs `sh -c cmd` in the guest; returns (exit code, stdout+stderr).
    pub fn sh(&mut self, cmd: &str) -> Result<(i64, String), String> {
        let pid = self.call(serde_json::json!({
            "execute": "guest-exec",
            "arguments": {"path": "/bin/sh", "arg": ["-c", cmd], "capture-output": true}
        }))?["pid"]
            .as_i64()
            .ok_or("guest-exec returned no pid")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let st = self.call(serde_json::json!({
                "execute": "guest-exec-status", "arguments": {"pid": pid}
            }))?;
            if st["exited"] == serde_json::json!(true) {
                let dec = |k: &str| {
                    st[k]
                        .as_str()
                        .map(|s| {
                            base64::engine::general_purpose::STANDARD
                                .decode(s)
                                .map(|b| String::from_utf8_lossy(&b).into_owned())
                                .unwrap_or_default()
                        })
                        .unwrap_or_default()
                };
                let code = st["exitcode"].as_i64().unwrap_or(-1);
                return Ok((code, dec("out-data") + &dec("err-data")));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(format!("{cmd}: did not finish within 60 s"))
    }

    /// Starts `sh -c cmd` without waiting (e.g. a reboot).
    pub fn spawn(&mut self, cmd: &str) -> Result<(), String> {
        self.call(serde_json::json!({
            "execute": "guest-exec",
            "arguments": {"path": "/bin/sh", "arg": ["-c", cmd]}
        }))
        .map(|_| ())
    }
}
