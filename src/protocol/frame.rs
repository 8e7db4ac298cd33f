//! Message framing: split a byte buffer into whole `tag + length + body` frames, enforcing length limits.

use bytes::{Bytes, BytesMut};
use thiserror::Error;

/// Bytes of a regular message header: one tag byte and a 4-byte length that counts itself.
pub const HEADER_LEN: usize = 5;

/// PostgreSQL's own ceiling for a message (PG_LARGE_MESSAGE_LIMIT is just under 1 GiB).
pub const MAX_MESSAGE_LEN: usize = 0x3fff_ffff;

/// Messages that carry only a header must have exactly this length field.
const EMPTY_BODY_LEN: usize = 4;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("invalid message length {len} for message type {tag:?}")]
    BadLength { tag: char, len: usize },
}

/// One whole message as it travelled on the wire, header included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub bytes: Bytes,
}

impl Frame {
    /// The message body after the 5-byte header.
    pub fn body(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }
}

/// Reads the header at the start of `buf`: `(tag, total frame length)`, or `None` if incomplete.
pub fn peek_header(buf: &[u8], max_len: usize) -> Result<Option<(u8, usize)>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let tag = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len < EMPTY_BODY_LEN || len > max_len {
        return Err(FrameError::BadLength { tag: tag as char, len });
    }
    Ok(Some((tag, len + 1)))
}

/// PostgreSQL's limit for frontend messages that carry no user data (PQ_SMALL_MESSAGE_LIMIT).
pub const SMALL_MESSAGE_LEN: usize = 10_000;

/// How a frontend message's length fares against the limits PostgreSQL applies per type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontendLen {
    Ok,
    /// Not a frontend message type at all.
    UnknownType,
    /// Wrong for its type (a body on a body-less message, a small message over 10,000 bytes).
    Invalid,
    /// A data-carrying message (Query, Parse, Bind, FunctionCall, CopyData) over `max_large`.
    TooLarge,
}

/// Checks a frontend message's total length (header included) against its type's limit:
/// body-less messages exactly 5 bytes, data-carrying ones up to `max_large`, the rest up to
/// PostgreSQL's small limit.
pub fn frontend_len(tag: u8, total: usize, max_large: usize) -> FrontendLen {
    use super::ftag::*;
    let ok = |fits: bool, otherwise: FrontendLen| if fits { FrontendLen::Ok } else { otherwise };
    match tag {
        SYNC | FLUSH | TERMINATE | COPY_DONE => ok(total == HEADER_LEN, FrontendLen::Invalid),
        QUERY | PARSE | BIND | COPY_DATA | FUNCTION_CALL => ok(total - 1 <= max_large, FrontendLen::TooLarge),
        CLOSE | DESCRIBE | EXECUTE | COPY_FAIL | PASSWORD => ok(total - 1 <= SMALL_MESSAGE_LEN, FrontendLen::Invalid),
        _ => FrontendLen::UnknownType,
    }
}

/// Splits the next whole frame off `buf`, if one is there.
pub fn split_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, FrameError> {
    match peek_header(buf, max_len)? {
        Some((tag, total)) if buf.len() >= total => Ok(Some(Frame { tag, bytes: buf.split_to(total).freeze() })),
        Some((_, total)) => {
            buf.reserve(total - buf.len());
            Ok(None)
        }
        None => Ok(None),
    }
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
    fn splits_whole_frames_and_waits_for_partial_ones() {
        let mut all = msg(b'Q', b"select 1\0");
        all.extend(msg(b'S', b""));
        let mut buf = BytesMut::from(&all[..all.len() - 2]);
        let f = split_frame(&mut buf, MAX_MESSAGE_LEN).unwrap().unwrap();
        assert_eq!(f.tag, b'Q');
        assert_eq!(f.body(), b"select 1\0");
        assert_eq!(split_frame(&mut buf, MAX_MESSAGE_LEN).unwrap(), None);
        buf.extend_from_slice(&all[all.len() - 2..]);
        let f = split_frame(&mut buf, MAX_MESSAGE_LEN).unwrap().unwrap();
        assert_eq!((f.tag, f.body().len()), (b'S', 0));
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_absurd_lengths() {
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 0, 3][..]);
        assert!(split_frame(&mut buf, MAX_MESSAGE_LEN).is_err());
        let mut buf = BytesMut::from(&[b'Q', 0xff, 0xff, 0xff, 0xff][..]);
        assert!(split_frame(&mut buf, MAX_MESSAGE_LEN).is_err());
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 1, 0][..]);
        assert!(split_frame(&mut buf, 100).is_err());
    }

    #[test]
    fn frontend_limits_per_type() {
        use FrontendLen::*;
        let cases: &[(u8, usize, FrontendLen)] = &[
            (b'S', 5, Ok),
            (b'S', 9, Invalid),
            (b'X', 6, Invalid),
            (b'Q', 100, Ok),
            (b'Q', 1001, Ok),
            (b'Q', 1002, TooLarge),
            (b'd', 1002, TooLarge),
            (b'P', 1002, TooLarge),
            (b'B', 1002, TooLarge),
            (b'F', 1002, TooLarge),
            (b'C', 10_001, Ok),
            (b'C', 10_002, Invalid),
            (b'E', 20_000, Invalid),
            (b'f', 20_000, Invalid),
            (b'Z', 6, UnknownType),
        ];
        for &(tag, total, want) in cases {
            assert_eq!(frontend_len(tag, total, 1000), want, "{} {total}", tag as char);
        }
    }
}
