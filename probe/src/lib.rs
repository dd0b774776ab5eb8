//! # zt-probe
//!
//! Kubernetes HTTP probes come from the kubelet, which reaches the pod IP,
//! not the pod's loopback. The platform keeps admin and app listeners on
//! loopback, so its containers are probed with `exec`: the binary itself is
//! started with a `probe` subcommand, which calls [`probe`] and exits with
//! its code. Standard library only; one request with a deadline, nothing
//! kept.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// Deadline for connecting and for the whole answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Largest answer read (status line, headers and a short JSON body).
const MAX_ANSWER: u64 = 64 * 1024;

/// Why a probe failed.
#[derive(Debug)]
pub enum ProbeError {
    /// The path is not an absolute HTTP path (it must start with `/` and
    /// hold no spaces or control characters).
    BadPath(String),
    /// No connection, or no complete answer in time.
    Unreachable {
        /// Where we tried.
        addr: SocketAddr,
        /// What happened.
        source: std::io::Error,
    },
    /// An answer other than 200.
    NotOk {
        /// The status line, e.g. `HTTP/1.1 503 Service Unavailable`.
        status_line: String,
        /// The body (bounded), which says why.
        body: String,
    },
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::BadPath(p) => write!(
                f,
                "{p:?} is not a path: it must start with / and hold no spaces or control characters"
            ),
            ProbeError::Unreachable { addr, source } => {
                write!(f, "cannot reach {addr}: {source}")
            }
            ProbeError::NotOk { status_line, body } if body.is_empty() => {
                write!(f, "{status_line}")
            }
            ProbeError::NotOk { status_line, body } => write!(f, "{status_line}\n{body}"),
        }
    }
}

impl std::error::Error for ProbeError {}

/// A listen address turned into one to connect to: an unspecified IP
/// (`0.0.0.0`, `[::]`) becomes the loopback of the same family.
pub fn connectable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        };
        addr.set_ip(ip);
    }
    addr
}

/// `GET path` on `addr` (HTTP/1.1, `Connection: close`): `Ok` on 200.
pub fn get_ok(addr: SocketAddr, path: &str) -> Result<(), ProbeError> {
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ProbeError::BadPath(path.to_string()));
    }
    let addr = connectable(addr);
    let unreachable = |source| ProbeError::Unreachable { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(unreachable)?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(unreachable)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(unreachable)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut raw)
        .map_err(unreachable)?;
    let answer = String::from_utf8_lossy(&raw);
    let status_line = answer.lines().next().unwrap_or_default().trim().to_string();
    if status_line.split_whitespace().nth(1) == Some("200") {
        return Ok(());
    }
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or_default();
    Err(ProbeError::NotOk {
        status_line: if status_line.is_empty() {
            "no HTTP answer".into()
        } else {
            status_line
        },
        body,
    })
}

/// [`get_ok`] as a process result: 0 on 200, else 1 with the reason on
/// stderr.
pub fn exit_code(addr: SocketAddr, path: &str) -> ExitCode {
    match get_ok(addr, path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{path}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot server answering `answer` to the first connection.
    fn serve_once(answer: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            // Read the whole request first: closing with unread bytes
            // would reset the connection instead of ending it.
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(answer);
        });
        addr
    }

    #[test]
    fn ok_on_200() {
        let addr = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        get_ok(addr, "/readyz").unwrap();
    }

    #[test]
    fn not_ok_carries_status_and_body() {
        let addr = serve_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n{\"ready\":false}");
        let e = get_ok(addr, "/readyz").unwrap_err().to_string();
        assert_eq!(e, "HTTP/1.1 503 Service Unavailable\n{\"ready\":false}");
    }

    #[test]
    fn garbage_and_silence_are_failures() {
        let addr = serve_once(b"SSH-2.0-OpenSSH\r\n");
        let e = get_ok(addr, "/readyz").unwrap_err().to_string();
        assert!(e.starts_with("SSH-2.0-OpenSSH"), "{e}");
        let addr = serve_once(b"");
        let e = get_ok(addr, "/readyz").unwrap_err().to_string();
        assert_eq!(e, "no HTTP answer");
    }

    #[test]
    fn paths_that_would_change_the_request_are_refused() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for bad in ["readyz", "/readyz HTTP/1.0", "/readyz\r\nX-Evil: 1", ""] {
            let e = get_ok(addr, bad).unwrap_err();
            assert!(matches!(e, ProbeError::BadPath(_)), "{bad:?}: {e}");
            assert!(e.to_string().contains("must start with /"), "{e}");
        }
    }

    #[test]
    fn a_closed_port_is_unreachable() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = get_ok(addr, "/healthz").unwrap_err().to_string();
        assert!(e.starts_with(&format!("cannot reach {addr}: ")), "{e}");
    }

    #[test]
    fn unspecified_addresses_become_loopback() {
        assert_eq!(
            connectable("0.0.0.0:8000".parse().unwrap()).to_string(),
            "127.0.0.1:8000"
        );
        assert_eq!(
            connectable("[::]:8000".parse().unwrap()).to_string(),
            "[::1]:8000"
        );
        assert_eq!(
            connectable("10.0.0.1:8000".parse().unwrap()).to_string(),
            "10.0.0.1:8000"
        );
    }
}
