//! Binding the listeners and accepting connections on both, within `MAX_CONNECTIONS`.
//!
//! A slot is taken before accepting, so beyond the limit new connections wait in the kernel's
//! accept queue instead of being dropped, and are served as soon as a slot frees up. One loop
//! serves both listeners, so an idle one never sits on a slot the other's clients need; tokio's
//! `accept` is cancel-safe (and on Linux one `accept4` call), so losing the race loses nothing.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};

use crate::accept::descriptors;
use crate::accept::sockets;
use crate::config::Port;
use crate::conn::shared::Shared;
use crate::server::connection;
use crate::telemetry::metrics::DescriptorUse;

/// Pause after a failed accept (out of descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Binds `addr` with `SO_REUSEADDR` and a long accept queue.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Binds a client-facing listener whose accepted sockets get `TCP_NODELAY` and `keepalive`.
pub(crate) fn bind_for_clients(
    addr: SocketAddr,
    keepalive: Option<std::time::Duration>,
) -> io::Result<TcpListener> {
    let listener = bind(addr)?;
    sockets::configure_listener(&listener, keepalive)?;
    Ok(listener)
}

/// Accepts on both listeners until the drain stops it; each connection runs in its own
/// tracked task.
pub(crate) async fn accept_loop(shared: Arc<Shared>, plain: TcpListener, tls: TcpListener) {
    let stop = shared.drain.stop_accepting.clone();
    loop {
        let permit = tokio::select! {
            permit = shared.limiter.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.cancelled() => return,
        };
        let (accepted, port) = tokio::select! {
            a = plain.accept() => (a, Port::Plain),
            a = tls.accept() => (a, Port::Tls),
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                if !sockets::INHERITED {
                    if let Err(e) = sockets::configure(&stream, shared.config.tcp_keepalive) {
                        tracing::debug!(%peer, error = %e, "could not set socket options");
                    }
                }
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
                if descriptors::is_exhausted(&e) {
                    shared.exhaustion.note(DescriptorUse::Accept, &e);
                } else {
                    tracing::warn!(error = %e, listener = ?port, "accept failed");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
