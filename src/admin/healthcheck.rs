//! `pgmux health [--ready]`: one GET of /healthz or /readyz on the admin endpoint, for a container
//! HEALTHCHECK in an image that has no curl or shell. Plain blocking std I/O: the command runs for
//! a moment and needs no runtime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long connecting, and then the whole answer, may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Why the check failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("no admin endpoint: set `admin_listen` (PGMUX_ADMIN_LISTEN) or pass --addr")]
    NoEndpoint,
    #[error("cannot resolve {addr}: {source}")]
    Resolve { addr: String, source: std::io::Error },
    #[error("{addr}: {source}")]
    Io { addr: SocketAddr, source: std::io::Error },
    #[error("{path} answered {status}: {body}")]
    Unhealthy { path: &'static str, status: u16, body: String },
    #[error("{path}: not an HTTP answer")]
    Malformed { path: &'static str },
}

/// Where to reach a listen address from the same host: a wildcard means loopback.
pub fn local_target(listen: &str) -> String {
    if let Some(port) = listen.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = listen.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        listen.to_owned()
    }
}

/// GETs /readyz (`ready`) or /healthz at `addr` (`host:port`); Ok with the body on 200.
pub fn check(addr: &str, ready: bool) -> Result<String, HealthError> {
    let path = if ready { "/readyz" } else { "/healthz" };
    let target = addr
        .to_socket_addrs()
        .map_err(|source| HealthError::Resolve { addr: addr.to_owned(), source })?
        .next()
        .ok_or_else(|| HealthError::Resolve { addr: addr.to_owned(), source: std::io::ErrorKind::NotFound.into() })?;
    let io = |source| HealthError::Io { addr: target, source };
    let mut stream = TcpStream::connect_timeout(&target, TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(io)?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or(HealthError::Malformed { path })?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body).trim().to_owned();
    if status == 200 { Ok(body) } else { Err(HealthError::Unhealthy { path, status, body }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_are_reached_on_loopback() {
        assert_eq!(local_target("0.0.0.0:9930"), "127.0.0.1:9930");
        assert_eq!(local_target("[::]:9930"), "[::1]:9930");
        assert_eq!(local_target("10.0.0.5:9930"), "10.0.0.5:9930");
    }

    #[test]
    fn nothing_listening_is_an_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let err = check(&format!("127.0.0.1:{port}"), false).expect_err("closed port");
        assert!(matches!(err, HealthError::Io { .. }), "{err}");
    }
}
