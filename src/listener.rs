//! Binding the two listeners and accepting connections, within `MAX_CONNECTIONS`.
//!
//! A slot is taken before `accept`, so beyond the limit new connections wait in the kernel's
//! accept queue instead of being dropped, and are served as soon as a slot frees up.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::task::TaskTracker;

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

/// Accepts until the drain stops it; each connection runs in its own task on `tracker`.
pub async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    port: Port,
    tracker: TaskTracker,
) {
    let stop = shared.drain.stop_accepting.clone();
    loop {
        let permit = tokio::select! {
            permit = shared.limiter.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.cancelled() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Small writes (response heads, WebSocket frames) must not wait for Nagle.
                let _ = stream.set_nodelay(true);
                tracker.spawn(connection::serve(
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
