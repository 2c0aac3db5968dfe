//! A minimal DNS client (RFC 1035 A queries over UDP) that sends from inside
//! a network namespace: a thread joins the namespace with setns(2), which
//! changes only that thread's network namespace.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

/// The A records of the answer and additional sections.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reply {
    pub rcode: u8,
    pub answers: Vec<(String, Ipv4Addr)>,
    pub additional: Vec<(String, Ipv4Addr)>,
}

/// Sends `A? name` to `server` from the namespace `netns` (/run/netns/NAME).
pub fn query_in_netns(netns: &str, server: SocketAddr, name: &str) -> Result<Reply, String> {
    let path = format!("/run/netns/{netns}");
    let name = name.to_string();
    std::thread::spawn(move || -> Result<Reply, String> {
        let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns {path}: {e}"))?;
        query(server, &name)
    })
    .join()
    .map_err(|_| "the DNS thread panicked".to_string())?
}

pub fn query(server: SocketAddr, name: &str) -> Result<Reply, String> {
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let id = (std::process::id() & 0xffff) as u16;
    let q = encode_query(id, name);
    sock.send_to(&q, server)
        .map_err(|e| format!("sending to {server}: {e}"))?;
    let mut buf = [0u8; 1500];
    let (n, _) = sock
        .recv_from(&mut buf)
        .map_err(|e| format!("no answer from {server} for {name}: {e}"))?;
    decode_reply(id, &buf[..n])
}

fn encode_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend(id.to_be_bytes());
    q.extend([0x01, 0x00]); // recursion desired
    q.extend([0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.push(0);
    q.extend([0, 1, 0, 1]); // A, IN
    q
}

/// Reads a (possibly compressed) name at `pos`; returns it and the position after it.
fn read_name(msg: &[u8], mut pos: usize) -> Result<(String, usize), String> {
    let mut labels = Vec::new();
    let mut end = None;
    for _ in 0..64 {
        let len = *msg.get(pos).ok_or("truncated name")? as usize;
        if len & 0xc0 == 0xc0 {
            let ptr = ((len & 0x3f) << 8) | *msg.get(pos + 1).ok_or("truncated pointer")? as usize;
            end.get_or_insert(pos + 2);
            pos = ptr;
        } else if len == 0 {
            return Ok((labels.join("."), end.unwrap_or(pos + 1)));
        } else {
            let l = msg.get(pos + 1..pos + 1 + len).ok_or("truncated label")?;
            labels.push(String::from_utf8_lossy(l).into_owned());
            pos += 1 + len;
        }
    }
    Err("name loops".into())
}

fn decode_reply(id: u16, msg: &[u8]) -> Result<Reply, String> {
    if msg.len() < 12 || msg[0..2] != id.to_be_bytes() {
        return Err(format!("not our reply ({} bytes)", msg.len()));
    }
    let count = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]) as usize;
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    let mut reply = Reply {
        rcode: msg[3] & 0x0f,
        ..Reply::default()
    };
    let mut pos = 12;
    for _ in 0..qd {
        pos = read_name(msg, pos)?.1 + 4;
    }
    for section in 0..3 {
        let n = [an, ns, ar][section];
        for _ in 0..n {
            let (name, p) = read_name(msg, pos)?;
            let hdr = msg.get(p..p + 10).ok_or("truncated record")?;
            let rtype = u16::from_be_bytes([hdr[0], hdr[1]]);
            let rdlen = u16::from_be_bytes([hdr[8], hdr[9]]) as usize;
            let rdata = msg.get(p + 10..p + 10 + rdlen).ok_or("truncated rdata")?;
            if rtype == 1 && rdlen == 4 {
                let ip = Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]);
                match section {
                    0 => reply.answers.push((name, ip)),
                    2 => reply.additional.push((name, ip)),
                    _ => {}
                }
            }
            pos = p + 10 + rdlen;
        }
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_compressed_answer() {
        let q = encode_query(7, "kubernetes.default.svc.e2e.test");
        let mut r = q.clone();
        r[2] = 0x81;
        r[3] = 0x80;
        r[7] = 1; // one answer
        r.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 96, 0, 1]);
        let reply = decode_reply(7, &r).unwrap();
        assert_eq!(
            reply.answers,
            vec![(
                "kubernetes.default.svc.e2e.test".to_string(),
                Ipv4Addr::new(10, 96, 0, 1)
            )]
        );
        assert!(decode_reply(8, &r).is_err());
    }
}
