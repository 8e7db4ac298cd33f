//! Scanning the two byte streams of a borrowed connection: which client bytes may be forwarded, which
//! server bytes belong to the client, and what they do to the conversation. Only headers are read,
//! except for the few messages the proxy acts on; a long server message is passed on as it arrives.

use bytes::{Buf, BytesMut};

use super::tracker::{ClientMsg, TxTracker};
use crate::error::ClientError;
use crate::protocol::frame::{MAX_MESSAGE_LEN, frontend_len_ok, peek_header, split_frame};
use crate::protocol::{TxStatus, btag, error_fields};

/// Client bytes ready to go to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientScan {
    /// Length of the run of whole frames at the head of the buffer that may be forwarded.
    pub forward: usize,
    /// A Terminate follows that run.
    pub terminate: bool,
}

/// Walks the whole frames at the head of `cin`, counting them in `tracker`.
pub fn scan_client(cin: &[u8], tracker: &mut TxTracker) -> Result<ClientScan, ClientError> {
    let mut pos = 0;
    while let Some((tag, total)) = check_client_header(&cin[pos..])? {
        if cin.len() - pos < total {
            break;
        }
        match tracker.on_client(tag) {
            ClientMsg::Forward => pos += total,
            ClientMsg::Terminate => {
                return Ok(ClientScan {
                    forward: pos,
                    terminate: true,
                });
            }
            ClientMsg::Invalid => return Err(unexpected(tag)),
        }
    }
    Ok(ClientScan {
        forward: pos,
        terminate: false,
    })
}

fn unexpected(tag: u8) -> ClientError {
    ClientError::Protocol(format!("invalid frontend message type {}", tag))
}

/// Validates the header at the start of `buf`, if it is complete.
pub fn check_client_header(buf: &[u8]) -> Result<Option<(u8, usize)>, ClientError> {
    match peek_header(buf, MAX_MESSAGE_LEN).map_err(|e| ClientError::Protocol(e.to_string()))? {
        Some((tag, total)) if !frontend_len_ok(tag, total) => Err(if frontend_len_ok(tag, 5) {
            ClientError::Protocol(format!(
                "invalid message length {} for message type {:?}",
                total - 1,
                tag as char
            ))
        } else {
            unexpected(tag)
        }),
        other => Ok(other),
    }
}

/// What the server stream did that the session must act on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ServerScan {
    /// Bytes at the head of the buffer for the client.
    pub forward: usize,
    /// ParameterStatus bodies seen (name\0value\0), for the connection's record.
    pub params: Vec<bytes::Bytes>,
}

/// Drops the replies to pgmux's own queries at the head of `rbuf`; returns false if more must arrive.
/// Their ParameterStatus messages are handed to `on_param`; errors are logged.
pub fn swallow_injected(
    rbuf: &mut BytesMut,
    tracker: &mut TxTracker,
    mut on_param: impl FnMut(&[u8]),
) -> Result<bool, String> {
    while tracker.swallowing() {
        let Some(frame) = split_frame(rbuf, MAX_MESSAGE_LEN).map_err(|e| e.to_string())? else {
            return Ok(false);
        };
        match frame.tag {
            btag::READY_FOR_QUERY => {
                let status = frame
                    .body()
                    .first()
                    .copied()
                    .and_then(TxStatus::from_byte)
                    .ok_or("bad ReadyForQuery")?;
                tracker.on_ready(status);
            }
            btag::PARAMETER_STATUS => on_param(frame.body()),
            btag::ERROR_RESPONSE => {
                let fields = error_fields(frame.body());
                tracing::warn!(?fields, "a query pgmux ran for the client failed");
            }
            _ => {}
        }
    }
    Ok(true)
}

/// Walks server messages at the head of `rbuf` that belong to the client. `passthrough` carries the
/// unread remainder of a message being passed on across calls.
pub fn scan_server(
    rbuf: &[u8],
    tracker: &mut TxTracker,
    passthrough: &mut usize,
) -> Result<ServerScan, String> {
    let mut scan = ServerScan::default();
    let mut pos = 0;
    loop {
        if *passthrough > 0 {
            let n = (*passthrough).min(rbuf.len() - pos);
            pos += n;
            *passthrough -= n;
            if *passthrough > 0 {
                break;
            }
            continue;
        }
        let Some((tag, total)) =
            peek_header(&rbuf[pos..], MAX_MESSAGE_LEN).map_err(|e| e.to_string())?
        else {
            break;
        };
        match tag {
            btag::READY_FOR_QUERY | btag::PARAMETER_STATUS => {
                if rbuf.len() - pos < total {
                    break;
                }
                let body = &rbuf[pos + 5..pos + total];
                if tag == btag::READY_FOR_QUERY {
                    let status = body
                        .first()
                        .copied()
                        .and_then(TxStatus::from_byte)
                        .ok_or("bad ReadyForQuery")?;
                    tracker.on_ready(status);
                } else {
                    scan.params.push(bytes::Bytes::copy_from_slice(body));
                }
                pos += total;
            }
            _ => *passthrough = total,
        }
    }
    scan.forward = pos;
    Ok(scan)
}

/// Advances `buf` past `n` forwarded bytes.
pub fn consume(buf: &mut BytesMut, n: usize) {
    buf.advance(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn client_scan_stops_at_partial_frames_and_terminate() {
        let mut t = TxTracker::default();
        let mut b = msg(b'Q', b"select 1\0");
        b.extend(msg(b'X', b""));
        assert_eq!(
            scan_client(&b, &mut t).unwrap(),
            ClientScan {
                forward: 14,
                terminate: true
            }
        );
        let mut t = TxTracker::default();
        assert_eq!(
            scan_client(&b[..10], &mut t).unwrap(),
            ClientScan {
                forward: 0,
                terminate: false
            }
        );
    }

    #[test]
    fn client_scan_rejects_bad_messages() {
        let mut t = TxTracker::default();
        assert!(scan_client(&msg(b'Z', b"I"), &mut t).is_err());
        assert!(scan_client(&msg(b'S', b"junk"), &mut t).is_err());
        assert!(scan_client(&[b'Q', 0xff, 0xff, 0xff, 0xff], &mut t).is_err());
    }

    #[test]
    fn server_scan_passes_long_rows_through_in_pieces() {
        let mut t = TxTracker::default();
        t.on_client(b'Q');
        let mut b = msg(b'D', &[7u8; 100]);
        b.extend(msg(b'S', b"TimeZone\0UTC\0"));
        b.extend(msg(b'Z', b"I"));
        let mut pass = 0;
        let s = scan_server(&b[..50], &mut t, &mut pass).unwrap();
        assert_eq!((s.forward, pass), (50, 55));
        let rest = &b[50..];
        let s = scan_server(&rest[..rest.len() - 1], &mut t, &mut pass).unwrap();
        assert_eq!(s.forward, 55 + 5 + 13);
        assert_eq!(s.params.len(), 1);
        assert!(!t.is_free());
        let s = scan_server(&rest[s.forward..], &mut t, &mut pass).unwrap();
        assert_eq!(s.forward, 6);
        assert!(t.is_free());
    }

    #[test]
    fn swallows_injected_replies() {
        let mut t = TxTracker::default();
        t.on_injected();
        t.on_client(b'Q');
        let mut b = msg(b'T', b"xx");
        b.extend(msg(b'S', b"a\0b\0"));
        b.extend(msg(b'Z', b"I"));
        b.extend(msg(b'C', b"SELECT 1\0"));
        let mut buf = BytesMut::from(&b[..]);
        let mut seen = vec![];
        assert!(swallow_injected(&mut buf, &mut t, |p| seen.push(p.to_vec())).unwrap());
        assert_eq!(seen, vec![b"a\0b\0".to_vec()]);
        assert_eq!(&buf[..], &msg(b'C', b"SELECT 1\0")[..]);
    }

    #[test]
    fn server_garbage_is_an_error() {
        let mut t = TxTracker::default();
        let mut pass = 0;
        assert!(scan_server(&[b'D', 0, 0, 0, 1], &mut t, &mut pass).is_err());
    }
}
