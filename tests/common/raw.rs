//! A raw wire-protocol client for tests that need exact bytes: startup variants, garbage, and
//! messages no driver sends.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
}

/// One message: tag and body.
pub type Msg = (u8, Vec<u8>);

pub fn startup_packet(minor: u16, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_u16(3);
    body.put_u16(minor);
    for (k, v) in params {
        body.put_slice(k.as_bytes());
        body.put_u8(0);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// The SQLSTATE in an ErrorResponse/NoticeResponse body.
pub fn field(body: &[u8], code: u8) -> Option<String> {
    let mut rest = body;
    while let Some((&c, tail)) = rest.split_first() {
        if c == 0 {
            return None;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        if c == code {
            return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
        }
        rest = &tail[end + 1..];
    }
    None
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw { stream: TcpStream::connect(addr).await.expect("connect"), buf: BytesMut::new() }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Next message, or None at end of stream (or after 10 s of silence).
    pub async fn recv(&mut self) -> Option<Msg> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
                if self.buf.len() > len {
                    let m = self.buf.split_to(len + 1);
                    return Some((m[0], m[5..].to_vec()));
                }
            }
            let read = tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf)).await;
            match read {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    /// Reads one raw byte (SSLRequest answers).
    pub async fn recv_byte(&mut self) -> Option<u8> {
        let mut b = [0u8; 1];
        match self.stream.read_exact(&mut b).await {
            Ok(_) => Some(b[0]),
            Err(_) => None,
        }
    }

    /// Messages up to and including ReadyForQuery (or end of stream).
    pub async fn until_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.recv().await {
            let done = m.0 == b'Z';
            out.push(m);
            if done {
                break;
            }
        }
        out
    }

    /// Answers the SCRAM exchange; returns every message after it up to ReadyForQuery.
    pub async fn scram(&mut self, password: &str) -> Vec<Msg> {
        let mut scram: Option<ScramSha256> = None;
        let mut out = Vec::new();
        loop {
            let Some((tag, body)) = self.recv().await else {
                return out;
            };
            if tag != b'R' {
                out.push((tag, body));
                if matches!(out.last(), Some((b'Z', _)) | Some((b'E', _))) {
                    return out;
                }
                continue;
            }
            let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            let mut buf = BytesMut::new();
            match code {
                0 => {
                    out.push((tag, body));
                    continue;
                }
                10 => {
                    let s = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut buf).unwrap();
                    scram = Some(s);
                }
                11 => {
                    let s = scram.as_mut().unwrap();
                    s.update(&body[4..]).unwrap();
                    frontend::sasl_response(s.message(), &mut buf).unwrap();
                }
                12 => {
                    scram.as_mut().unwrap().finish(&body[4..]).unwrap();
                    continue;
                }
                c => panic!("unexpected auth code {c}"),
            }
            self.send(&buf).await;
        }
    }

    /// Connects, starts up as app/app on db app, and returns the greeting messages.
    pub async fn login(addr: SocketAddr, extra: &[(&str, &str)]) -> (Raw, Vec<Msg>) {
        Raw::login_as(addr, "app", "app", extra).await
    }

    /// Connects, starts up as `user` (SCRAM with `password`) on db app.
    pub async fn login_as(addr: SocketAddr, user: &str, password: &str, extra: &[(&str, &str)]) -> (Raw, Vec<Msg>) {
        let mut raw = Raw::connect(addr).await;
        let mut params = vec![("user", user), ("database", "app")];
        params.extend_from_slice(extra);
        raw.send(&startup_packet(0, &params)).await;
        let greeting = raw.scram(password).await;
        assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "login failed: {greeting:?}");
        (raw, greeting)
    }

    pub async fn query(&mut self, sql: &str) -> Vec<Msg> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        self.send(&message(b'Q', &body)).await;
        self.until_ready().await
    }

    /// True once the peer has closed the connection (reads until EOF, dropping messages).
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, async { while self.recv().await.is_some() {} }).await.is_ok()
    }
}
