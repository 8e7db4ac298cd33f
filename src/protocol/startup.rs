//! The untagged first packet a client sends: StartupMessage, SSLRequest, GSSENCRequest or CancelRequest.

use thiserror::Error;

/// PostgreSQL's MAX_STARTUP_PACKET_LENGTH.
pub const MAX_STARTUP_LEN: usize = 10_000;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
const PROTOCOL_MAJOR: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    Ssl,
    GssEnc,
    Cancel {
        pid: i32,
        secret: i32,
    },
    Startup {
        minor: u16,
        params: Vec<(String, String)>,
        /// `_pq_.*` protocol options we do not support: named back in NegotiateProtocolVersion.
        unsupported_options: Vec<String>,
    },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StartupError {
    #[error("invalid length of startup packet")]
    BadLength,
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedVersion { major: u32, minor: u32 },
    #[error("invalid startup packet layout: expected terminator as last byte")]
    BadLayout,
    #[error("invalid byte sequence in startup packet")]
    NotUtf8,
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
}

/// Total packet length announced by the first 4 bytes, if they are there and sane.
pub fn packet_len(buf: &[u8]) -> Result<Option<usize>, StartupError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(StartupError::BadLength);
    }
    Ok(Some(len))
}

/// The encryption request the first 8 bytes of a connection make, if they are one (an SSLRequest
/// or GSSENCRequest is exactly 8 bytes: length 8 and the request code).
pub fn encryption_request(first: &[u8]) -> Option<StartupPacket> {
    let first: &[u8; 8] = first.get(..8)?.try_into().ok()?;
    if first[..4] != 8u32.to_be_bytes() {
        return None;
    }
    match u32::from_be_bytes([first[4], first[5], first[6], first[7]]) {
        SSL_REQUEST => Some(StartupPacket::Ssl),
        GSSENC_REQUEST => Some(StartupPacket::GssEnc),
        _ => None,
    }
}

/// Parses one whole startup-phase packet (length prefix included).
pub fn parse(packet: &[u8]) -> Result<StartupPacket, StartupError> {
    if packet.len() < 8 {
        return Err(StartupError::BadLength);
    }
    let code = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let body = &packet[8..];
    match code {
        SSL_REQUEST if body.is_empty() => Ok(StartupPacket::Ssl),
        GSSENC_REQUEST if body.is_empty() => Ok(StartupPacket::GssEnc),
        CANCEL_REQUEST if body.len() == 8 => Ok(StartupPacket::Cancel {
            pid: i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
            secret: i32::from_be_bytes([body[4], body[5], body[6], body[7]]),
        }),
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => Err(StartupError::BadLength),
        _ if code >> 16 == PROTOCOL_MAJOR => parse_params(code as u16, body),
        _ => Err(StartupError::UnsupportedVersion { major: code >> 16, minor: code & 0xffff }),
    }
}

fn parse_params(minor: u16, body: &[u8]) -> Result<StartupPacket, StartupError> {
    let mut params = Vec::new();
    let mut unsupported_options = Vec::new();
    let mut rest = body;
    loop {
        let (name, tail) = super::cstr(rest).ok_or(StartupError::BadLayout)?;
        if name.is_empty() {
            if !tail.is_empty() {
                return Err(StartupError::BadLayout);
            }
            break;
        }
        let (value, tail) = super::cstr(tail).ok_or(StartupError::BadLayout)?;
        rest = tail;
        let name = std::str::from_utf8(name).map_err(|_| StartupError::NotUtf8)?;
        let value = std::str::from_utf8(value).map_err(|_| StartupError::NotUtf8)?;
        if name.starts_with("_pq_.") {
            unsupported_options.push(name.to_string());
        } else {
            params.push((name.to_string(), value.to_string()));
        }
    }
    if !params.iter().any(|(k, v)| k == "user" && !v.is_empty()) {
        return Err(StartupError::NoUser);
    }
    Ok(StartupPacket::Startup { minor, params, unsupported_options })
}

/// Splits a libpq `options` value into `-c name=value` / `--name=value` settings.
/// Backslash escapes a following character (so `\ ` is a space inside a value), as in PostgreSQL.
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            c if c.is_ascii_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next().ok_or_else(|| "missing setting after -c".to_string())?
        } else if let Some(s) = w.strip_prefix("--").or_else(|| w.strip_prefix("-c")) {
            s.to_string()
        } else {
            return Err(format!("unsupported startup option \"{w}\""));
        };
        let (name, value) =
            setting.split_once('=').ok_or_else(|| format!("invalid setting \"{setting}\" in options"))?;
        out.push((name.replace('-', "_"), value.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: u32, body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn parses_each_packet_kind() {
        assert_eq!(parse(&packet(SSL_REQUEST, b"")), Ok(StartupPacket::Ssl));
        assert_eq!(parse(&packet(GSSENC_REQUEST, b"")), Ok(StartupPacket::GssEnc));
        assert_eq!(encryption_request(&packet(SSL_REQUEST, b"")), Some(StartupPacket::Ssl));
        assert_eq!(encryption_request(&packet(GSSENC_REQUEST, b"")), Some(StartupPacket::GssEnc));
        assert_eq!(encryption_request(&packet(CANCEL_REQUEST, &[0; 8])), None);
        assert_eq!(encryption_request(&packet(SSL_REQUEST, b"")[..7]), None);
        let mut body = 7i32.to_be_bytes().to_vec();
        body.extend_from_slice(&(-9i32).to_be_bytes());
        assert_eq!(parse(&packet(CANCEL_REQUEST, &body)), Ok(StartupPacket::Cancel { pid: 7, secret: -9 }));
        let p = parse(&packet(0x0003_0002, b"user\0app\0_pq_.x\0one\0\0")).unwrap();
        assert_eq!(
            p,
            StartupPacket::Startup {
                minor: 2,
                params: vec![("user".into(), "app".into())],
                unsupported_options: vec!["_pq_.x".into()],
            }
        );
    }

    #[test]
    fn rejects_bad_packets() {
        assert!(matches!(parse(&packet(0x0002_0000, b"")), Err(StartupError::UnsupportedVersion { major: 2, .. })));
        assert_eq!(parse(&packet(0x0003_0000, b"user\0app")), Err(StartupError::BadLayout));
        assert_eq!(parse(&packet(0x0003_0000, b"user\0\0")), Err(StartupError::BadLayout));
        assert_eq!(parse(&packet(0x0003_0000, b"database\0x\0\0")), Err(StartupError::NoUser));
        assert_eq!(parse(&packet(CANCEL_REQUEST, b"12")), Err(StartupError::BadLength));
        assert_eq!(packet_len(&[0, 0, 0, 4]), Err(StartupError::BadLength));
        assert_eq!(packet_len(&[0x7f, 0, 0, 0]), Err(StartupError::BadLength));
        assert_eq!(packet_len(&[0, 0]), Ok(None));
    }

    #[test]
    fn parses_options() {
        assert_eq!(
            parse_options("-c search_path=a,b --statement-timeout=5s -cwork_mem=1MB").unwrap(),
            vec![
                ("search_path".into(), "a,b".into()),
                ("statement_timeout".into(), "5s".into()),
                ("work_mem".into(), "1MB".into())
            ]
        );
        assert_eq!(
            parse_options(r"-c application_name=a\ b").unwrap(),
            vec![("application_name".into(), "a b".into())]
        );
        assert!(parse_options("-x").is_err());
        assert!(parse_options("-c").is_err());
    }

    #[test]
    fn random_packets_never_panic() {
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 64) as usize;
            let mut p: Vec<u8> = (0..len).map(|i| (seed >> (i % 8 * 8)) as u8 ^ i as u8).collect();
            if p.len() >= 8 && seed.is_multiple_of(3) {
                p[4..8].copy_from_slice(&0x0003_0000u32.to_be_bytes());
            }
            let _ = parse(&p);
            let _ = packet_len(&p);
            let _ = parse_options(&String::from_utf8_lossy(&p));
        }
    }
}
