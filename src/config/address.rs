//! Network addresses in the config: server members (`host[:port]`, port 5432 by default) and
//! listen endpoints (`host:port`, port required); hosts are IPv4, `[IPv6]` or DNS names.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// PostgreSQL's default port, used when a server is written without one.
const DEFAULT_PG_PORT: u16 = 5432;

/// A PostgreSQL server: displays as `host:port` (`[v6]:port` for IPv6 literals).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    /// Hostname or IP literal, without brackets.
    pub host: String,
    pub port: u16,
}

/// Why an address could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AddrError(String);

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Accepts `host:port`, `[::1]:5432`, `host` and `[::1]` (port 5432); port 0 is refused.
impl FromStr for ServerAddr {
    type Err = AddrError;

    fn from_str(text: &str) -> Result<Self, AddrError> {
        let (host, port) = split_host_port(text)?;
        let port = port.unwrap_or(DEFAULT_PG_PORT);
        if port == 0 {
            return Err(AddrError(format!("`{text}`: port 0 is not a server port")));
        }
        Ok(ServerAddr { host, port })
    }
}

/// Checks a listen endpoint: `host:port` with an explicit port (0 lets the OS choose).
pub(super) fn parse_listen(text: &str) -> Result<ServerAddr, AddrError> {
    match split_host_port(text)? {
        (host, Some(port)) => Ok(ServerAddr { host, port }),
        (_, None) => Err(AddrError(format!("`{text}` has no port; write e.g. `127.0.0.1:6432`"))),
    }
}

fn split_host_port(text: &str) -> Result<(String, Option<u16>), AddrError> {
    let text = text.trim();
    if let Some(bracketed) = text.strip_prefix('[') {
        return split_bracketed(text, bracketed);
    }
    if text.matches(':').count() > 1 {
        return match text.parse::<Ipv6Addr>() {
            Ok(_) => Ok((text.to_owned(), None)),
            Err(_) => Err(AddrError(format!("`{text}`: write IPv6 addresses in brackets, e.g. `[::1]:5432`"))),
        };
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(parse_port(text, port)?)),
        None => (text, None),
    };
    check_host(text, host)?;
    Ok((host.to_owned(), port))
}

/// Handles `[v6]` and `[v6]:port`; `inner` is `text` without its leading `[`.
fn split_bracketed(text: &str, inner: &str) -> Result<(String, Option<u16>), AddrError> {
    let Some((host, after)) = inner.split_once(']') else {
        return Err(AddrError(format!("`{text}`: missing `]`")));
    };
    if host.parse::<Ipv6Addr>().is_err() {
        return Err(AddrError(format!("`{text}`: `{host}` is not an IPv6 address")));
    }
    let port = match after {
        "" => None,
        _ => match after.strip_prefix(':') {
            Some(port) => Some(parse_port(text, port)?),
            None => return Err(AddrError(format!("`{text}`: expected `:port` after `]`"))),
        },
    };
    Ok((host.to_owned(), port))
}

fn parse_port(text: &str, port: &str) -> Result<u16, AddrError> {
    let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    match port.parse::<u16>() {
        Ok(port) if digits => Ok(port),
        _ => Err(AddrError(format!("`{text}`: port `{port}` is not a number from 0 to 65535"))),
    }
}

/// A host is an IPv4 literal or a DNS name (letters, digits, `-`, `_`, dot-separated labels).
fn check_host(text: &str, host: &str) -> Result<(), AddrError> {
    if host.is_empty() {
        return Err(AddrError(format!("`{text}` has no host")));
    }
    let looks_numeric = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if looks_numeric {
        return match host.parse::<Ipv4Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(AddrError(format!("`{text}`: `{host}` is not an IPv4 address"))),
        };
    }
    let label_ok =
        |label: &str| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if host.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(AddrError(format!("`{text}`: `{host}` is not a valid host name")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(host: &str, port: u16) -> ServerAddr {
        ServerAddr { host: host.into(), port }
    }

    #[test]
    fn server_addresses() {
        let table = [
            ("127.0.0.1:5433", server("127.0.0.1", 5433)),
            ("db.example.com:6000", server("db.example.com", 6000)),
            ("db", server("db", 5432)),
            ("pg-1_a", server("pg-1_a", 5432)),
            ("[::1]:5433", server("::1", 5433)),
            ("[::1]", server("::1", 5432)),
            ("::1", server("::1", 5432)),
            ("fe80::1", server("fe80::1", 5432)),
        ];
        for (text, expected) in table {
            assert_eq!(text.parse::<ServerAddr>(), Ok(expected), "{text}");
        }
    }

    #[test]
    fn bad_server_addresses() {
        let table = [
            "",
            ":5432",
            "db:",
            "db:0",
            "db:65536",
            "db:54x",
            "db:+1",
            "a b:1",
            "db/x",
            "db..x",
            "300.1.1.1",
            "[::1",
            "[db]:1",
            "[::1]5432",
            "::1:5432:x",
            "1.2.3.4:5:6",
            "db:-1",
        ];
        for text in table {
            assert!(text.parse::<ServerAddr>().is_err(), "{text:?} should be refused");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["127.0.0.1:5432", "[::1]:5433", "db:1"] {
            let addr: ServerAddr = text.parse().expect("valid");
            assert_eq!(addr.to_string(), text);
        }
        assert_eq!(server("db", 5432).to_string(), "db:5432");
    }

    #[test]
    fn listen_needs_a_port_but_may_use_zero() {
        assert_eq!(parse_listen("127.0.0.1:0"), Ok(server("127.0.0.1", 0)));
        assert_eq!(parse_listen("[::]:6432"), Ok(server("::", 6432)));
        let err = parse_listen("127.0.0.1").expect_err("no port");
        assert!(err.to_string().contains("no port"), "{err}");
    }
}
