//! Accepting client connections: one named task per client, all owned by a tracker so shutdown can
//! drain them (SIGTERM, or SHUTDOWN on the admin console) or drop them (SIGINT). What a client's
//! task runs is the caller's (`app`): the listener knows sockets, not sessions.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::state::ProxyState;

/// Which listener a client came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `listen`: transactions go to the primary, explicitly read-only ones to a replica.
    Writer,
    /// `reader_listen`: every transaction goes to a replica (the primary if none is usable).
    Reader,
}

/// Binds a client listener (the first address `addr` resolves to that binds) with a listen backlog
/// of `backlog`, clamped to the kernel's ceiling.
pub async fn bind(addr: &str, backlog: u32) -> std::io::Result<TcpListener> {
    let (l, _) = bind_per_core(addr, backlog, 1).await?;
    Ok(l)
}

/// As `bind`, for `cores` cores: with more than one, the listener shares its port (SO_REUSEPORT)
/// with `cores - 1` more sockets bound to the same address (its port, when `addr` asks for port 0),
/// one for each further core to accept on, and the kernel spreads new connections over them.
///
/// The port is shared among this process's sockets only: an address another process listens on —
/// even a second pgmux, whose sockets would take SO_REUSEPORT too — is refused as in use, as with
/// one core. Otherwise the kernel would silently split new connections between the two processes
/// (measured: a second instance's writer port sharing the first one's reader endpoint).
pub async fn bind_per_core(
    addr: &str,
    backlog: u32,
    cores: usize,
) -> std::io::Result<(TcpListener, Vec<std::net::TcpListener>)> {
    let shared = cores > 1;
    let backlog = effective_backlog(backlog);
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        match bind_exclusive(a, backlog, shared) {
            Ok(first) => {
                let bound = first.local_addr()?;
                let more = (1..cores).map(|_| bind_one(bound, backlog, true)).collect::<std::io::Result<_>>()?;
                return Ok((TcpListener::from_std(first)?, more));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: no address"))))
}

/// The first socket of a listener: as `bind_one`, but when it is to be `shared` with this
/// process's other sockets (SO_REUSEPORT) and `addr` names a port, first checks that no one listens
/// there: a socket without SO_REUSEPORT cannot bind a port some socket listens on, whatever that
/// one's options. (Two processes starting at the same instant could both pass the check.)
fn bind_exclusive(addr: SocketAddr, backlog: u32, shared: bool) -> std::io::Result<std::net::TcpListener> {
    if shared && addr.port() != 0 {
        let probe = new_socket(addr)?;
        probe.bind(&addr.into())?;
        // Closed here, before the listener binds.
        drop(probe);
    }
    bind_one(addr, backlog, shared)
}

/// A TCP socket for `addr`'s family, with SO_REUSEADDR as tokio's own bind sets it: a restart need
/// not wait out TIME_WAIT.
fn new_socket(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    Ok(socket)
}

fn bind_one(addr: SocketAddr, backlog: u32, shared: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = new_socket(addr)?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    // Accepted sockets inherit these from the listener (Linux), which saves each login the
    // system calls (see `client_socket_options`).
    socket.set_tcp_nodelay(true)?;
    socket.set_tcp_keepalive(&crate::backend::keepalive())?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

/// Gives an accepted client socket TCP_NODELAY and pgmux's keepalive — where the kernel does not
/// copy them from the listener (Linux does: nothing to do there).
pub fn client_socket_options(tcp: &TcpStream) {
    if cfg!(target_os = "linux") {
        return;
    }
    let _ = tcp.set_nodelay(true);
    // Notice clients that vanished without a FIN (a dead host, a dropped NAT entry).
    let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&crate::backend::keepalive());
}

/// `wanted`, clamped to /proc/sys/net/core/somaxconn (the kernel silently caps it there anyway;
/// clamping here lets the log say what is in force).
pub fn effective_backlog(wanted: u32) -> u32 {
    let ceiling = std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok().and_then(|s| s.trim().parse().ok());
    ceiling.map_or(wanted, |max: u32| wanted.min(max))
}

/// How the process is asked to stop.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// SIGTERM: stop accepting, let running transactions finish (bounded), then return.
    pub drain: crate::state::Drain,
    /// SIGINT: return now.
    pub abort: CancellationToken,
}

/// Accepts clients on `listener` until shutdown, each served by a task running `serve(stream,
/// peer, tracker)` (tasks it spawns on `tracker` are waited for like it); returns when every
/// client is gone, or when the drain deadline passes, or at once on abort. The main (writer)
/// listener's state is `ctx`'s readiness.
pub async fn run<F, Fut>(
    ctx: &ProxyState,
    listener: TcpListener,
    endpoint: Endpoint,
    shutdown: Shutdown,
    drain_timeout: Duration,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, TaskTracker) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tracker = TaskTracker::new();
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, ?endpoint, "accepting clients");
    // Readiness follows the main listener.
    let main = endpoint == Endpoint::Writer;
    if main {
        ctx.set_accepting(true);
    }
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    next_id += 1;
                    // At debug level only: an enabled span costs every client a formatted field set and every
                    // poll an enter and exit (~6k instructions per login, ~700 per transaction, measured);
                    // client events at info level and above carry `peer` themselves.
                    let span = tracing::debug_span!("client", id = next_id, %peer);
                    tracker.spawn(serve(stream, peer, tracker.clone()).instrument(span));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.drain.cancelled() => break,
            _ = shutdown.abort.cancelled() => break,
        }
    }
    if main {
        ctx.set_accepting(false);
    }
    if shutdown.abort.is_cancelled() {
        return;
    }
    drop(listener);
    tracker.close();
    tracing::info!(clients = tracker.len(), "draining");
    tokio::select! {
        _ = tracker.wait() => tracing::info!("all clients gone"),
        _ = tokio::time::sleep(drain_timeout) => tracing::warn!(left = tracker.len(), "drain timeout; closing the rest"),
        _ = shutdown.abort.cancelled() => {}
    }
}

/// SIGTERM drains, SIGINT aborts (a second SIGTERM too).
pub fn watch_signals(shutdown: Shutdown) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: draining");
                shutdown.drain.cancel();
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: exiting");
                shutdown.abort.cancel();
                return;
            }
        }
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        shutdown.abort.cancel();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn backlog_is_clamped_to_the_kernel_ceiling_and_the_listener_accepts() {
        let ceiling: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap().trim().parse().unwrap();
        assert_eq!(effective_backlog(u32::MAX), ceiling);
        assert_eq!(effective_backlog(1), 1);
        let l = bind("127.0.0.1:0", 8).await.unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        assert_eq!(c.unwrap().local_addr().unwrap(), s.unwrap().1);
    }

    #[tokio::test]
    async fn a_port_another_listener_holds_is_refused_even_when_shared_per_core() {
        // Another pgmux with per-core sockets (SO_REUSEPORT) holds the port.
        let (first, more) = bind_per_core("127.0.0.1:0", 8, 2).await.unwrap();
        let addr = first.local_addr().unwrap().to_string();
        assert_eq!(more.len(), 1);
        for cores in [1, 2, 3] {
            let err = bind_per_core(&addr, 8, cores).await.expect_err("the port is taken");
            assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{cores} cores: {err}");
        }
        // Any other listener, without SO_REUSEPORT.
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = plain.local_addr().unwrap().to_string();
        let err = bind_per_core(&addr, 8, 2).await.expect_err("the port is taken");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        // Once the holder is gone, the port binds again, shared by this process's sockets, and
        // accepts.
        drop((first, more));
        drop(plain);
        let (first, more) = bind_per_core(&addr, 8, 2).await.unwrap();
        assert_eq!(more[0].local_addr().unwrap(), first.local_addr().unwrap());
        // (With two sockets open, the kernel may hand the connection to either.)
        drop(more);
        let (c, s) = tokio::join!(TcpStream::connect(&addr), first.accept());
        assert_eq!(c.unwrap().local_addr().unwrap(), s.unwrap().1);
    }

    #[tokio::test]
    async fn accepted_clients_have_nodelay_and_keepalive() {
        let l = bind("127.0.0.1:0", 8).await.unwrap();
        let addr = l.local_addr().unwrap();
        let (_c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (tcp, _) = s.unwrap();
        client_socket_options(&tcp);
        assert!(tcp.nodelay().unwrap());
        let sock = socket2::SockRef::from(&tcp);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), crate::backend::KEEPALIVE_IDLE);
    }
}
