//! Binding the two listeners and accepting connections, within `MAX_CONNECTIONS`.
//!
//! A slot is taken before `accept`, so beyond the limit new connections wait in the kernel's
//! accept queue instead of being dropped, and are served as soon as a slot frees up.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::connection::{self, Port};
use crate::Shared;

/// Binds `addr` with `SO_REUSEADDR` and a long accept queue.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Registers a listener with the reactor for readiness only; accepting stays ours.
fn watch(listener: std::net::TcpListener) -> io::Result<AsyncFd<std::net::TcpListener>> {
    // SAFETY: the AsyncFd owns the listener, so its descriptor stays open and unchanged for as
    // long as the AsyncFd lives.
    unsafe { AsyncFd::register(listener) }.map_err(|e| e.into_parts().1)
}

/// `accept4(2)` returning a socket that is already non-blocking: one system call per
/// connection where `std`'s `accept` and `set_nonblocking` take two.
fn accept_nonblocking(
    listener: &std::net::TcpListener,
) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    // SAFETY: accept4 writes at most `len` bytes of address into the storage try_init provides,
    // and a descriptor it returns is new and owned by nobody else.
    let (stream, addr) = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
            match libc::accept4(listener.as_raw_fd(), storage.cast(), len, flags) {
                -1 => Err(io::Error::last_os_error()),
                fd => Ok(std::net::TcpStream::from_raw_fd(fd)),
            }
        })
    }?;
    let peer = addr
        .as_socket()
        .ok_or_else(|| io::Error::other("accepted a connection with a non-IP address"))?;
    Ok((stream, peer))
}

/// Accepts until the drain stops it; each connection runs in its own tracked task.
///
/// The order is: wait until a connection is queued, take a slot, accept. Taking the slot
/// first would let an idle listener sit on one while the other listener's clients wait.
pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, port: Port) {
    let stop = shared.drain.stop_accepting.clone();
    let listener = match listener.into_std().and_then(watch) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, listener = ?port, "cannot watch the listener; it will not accept");
            return;
        }
    };
    loop {
        let mut ready = tokio::select! {
            ready = listener.readable() => match ready {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, listener = ?port, "listener failed");
                    return;
                }
            },
            _ = stop.cancelled() => return,
        };
        let permit = tokio::select! {
            permit = shared.limiter.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.cancelled() => return,
        };
        let accepted = match ready.try_io(|l| accept_nonblocking(l.get_ref())) {
            Ok(accepted) => accepted.and_then(|(s, peer)| Ok((TcpStream::from_std(s)?, peer))),
            // Another wake-up took it, or the client gave up: wait again.
            Err(_would_block) => continue,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Small writes (response heads, WebSocket frames) must not wait for Nagle.
                let _ = stream.set_nodelay(true);
                shared.tasks.spawn(connection::serve(
                    shared.clone(),
                    stream,
                    peer,
                    port,
                    permit,
                ));
            }
            Err(e) => {
                // Out of file descriptors or similar: say so, back off, keep serving.
                tracing::warn!(error = %e, listener = ?port, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
