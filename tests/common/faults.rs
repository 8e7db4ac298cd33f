//! A fault-injection TCP relay for tests: sits between a client and pgmux, or between pgmux and a
//! server, and can throttle each direction to N bytes/s, stall it, or cut every connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// One direction's faults.
#[derive(Debug, Default)]
pub struct Direction {
    /// Bytes per second (0: unlimited).
    rate: AtomicU64,
    /// Nothing passes while set.
    stalled: AtomicBool,
    /// Largest chunk forwarded at once (0: 64 KiB); small chunks split messages at odd places.
    chunk: AtomicU64,
    /// Bytes passed so far.
    pub bytes: AtomicU64,
}

impl Direction {
    pub fn throttle(&self, bytes_per_sec: u64) {
        self.rate.store(bytes_per_sec, Ordering::Relaxed);
    }

    pub fn stall(&self, on: bool) {
        self.stalled.store(on, Ordering::Relaxed);
    }

    pub fn chunk(&self, max: u64) {
        self.chunk.store(max, Ordering::Relaxed);
    }
}

/// Shared controls of a relay.
#[derive(Debug)]
pub struct Faults {
    /// Towards the target (client → pgmux, or pgmux → server).
    pub up: Direction,
    /// Back from the target.
    pub down: Direction,
    /// Bumped to cut every open connection.
    cut: watch::Sender<u64>,
}

impl Faults {
    /// Closes every connection through the relay at once (new ones are still accepted).
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Undoes throttles and stalls.
    pub fn clear(&self) {
        for d in [&self.up, &self.down] {
            d.throttle(0);
            d.stall(false);
            d.chunk(0);
        }
    }
}

/// A running relay: connect to `addr` to reach the target through the faults.
pub struct Relay {
    pub addr: SocketAddr,
    pub faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().unwrap();
        let faults =
            Arc::new(Faults { up: Direction::default(), down: Direction::default(), cut: watch::channel(0).0 });
        let f = faults.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let f = f.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else { return };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let mut cut = f.cut.subscribe();
                    let (ir, iw) = inbound.into_split();
                    let (or, ow) = outbound.into_split();
                    tokio::select! {
                        _ = pump(ir, ow, &f.up) => {}
                        _ = pump(or, iw, &f.down) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Relay { addr, faults, task }
    }
}

/// Copies one direction, obeying its faults, until either side closes.
async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, d: &Direction) {
    let mut buf = vec![0u8; 64 * 1024];
    // Pacing: bytes passed since `since` at the rate then in force (reset when the rate changes).
    let (mut paced_rate, mut since, mut paced) = (0u64, Instant::now(), 0u64);
    loop {
        while d.stalled.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let chunk = match d.chunk.load(Ordering::Relaxed) {
            0 => buf.len(),
            n => (n as usize).min(buf.len()),
        };
        let n = match from.read(&mut buf[..chunk]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        d.bytes.fetch_add(n as u64, Ordering::Relaxed);
        let rate = d.rate.load(Ordering::Relaxed);
        if rate != paced_rate {
            (paced_rate, since, paced) = (rate, Instant::now(), 0);
        }
        paced += n as u64;
        // Not waiting for a condition: the time these bytes take at `rate`, slept only once it
        // adds up to a few milliseconds (the timer's grain).
        if let Some(micros) = (paced * 1_000_000).checked_div(rate) {
            let due = since + Duration::from_micros(micros);
            if due > Instant::now() + Duration::from_millis(2) {
                tokio::time::sleep_until(due.into()).await;
            }
        }
    }
    let _ = to.shutdown().await;
}

/// The code of a CancelRequest and of an SSLRequest (the second word of the packet).
pub const CANCEL_CODE: u32 = 80877102;
pub const SSL_CODE: u32 = 80877103;

/// A relay that notes the first packet code of every connection (CancelRequest, SSLRequest, or a
/// startup's protocol version) and holds each plaintext CancelRequest for `cancel_delay` before
/// passing it on: a cancel then reaches the server well after pgmux sent it.
pub struct PeekRelay {
    pub addr: SocketAddr,
    /// First codes seen, in order.
    pub codes: Arc<std::sync::Mutex<Vec<u32>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PeekRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PeekRelay {
    pub async fn start(target: SocketAddr, cancel_delay: Duration) -> PeekRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().unwrap();
        let codes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = codes.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = [0u8; 8];
                    if inbound.read_exact(&mut head).await.is_err() {
                        return;
                    }
                    let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
                    seen.lock().unwrap().push(code);
                    if code == CANCEL_CODE {
                        // Injected latency, not a wait for a condition.
                        tokio::time::sleep(cancel_delay).await;
                    }
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    if outbound.write_all(&head).await.is_err() {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        PeekRelay { addr, codes, task }
    }

    pub fn count(&self, code: u32) -> usize {
        self.codes.lock().unwrap().iter().filter(|&&c| c == code).count()
    }
}
