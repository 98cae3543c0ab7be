//! Options set on every TCP connection the proxy accepts or opens.
//!
//! Keepalive matters behind an NLB: it forgets an idle flow after 350 s without telling either
//! end, so a WebSocket whose client vanished would otherwise stay open here and at the app for
//! good. Probes start after `TCP_KEEPALIVE` of silence and come every sixth of that (at least
//! a second); six unanswered ones, about twice `TCP_KEEPALIVE` in all, and the socket fails,
//! which ends the tunnel or request on both sides.

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// Unanswered probes before the peer is declared dead.
pub const KEEPALIVE_PROBES: u32 = 6;

/// The interval between probes for an idle time of `idle`.
pub fn keepalive_interval(idle: Duration) -> Duration {
    Duration::from_secs((idle.as_secs() / u64::from(KEEPALIVE_PROBES)).max(1))
}

/// How long a silent peer keeps a connection: the idle time and every probe.
pub fn dead_after(idle: Duration) -> Duration {
    idle + keepalive_interval(idle) * KEEPALIVE_PROBES
}

/// No Nagle delay (response heads and WebSocket frames are small), and keepalive when
/// `keepalive` is set.
pub(crate) fn configure(stream: &TcpStream, keepalive: Option<Duration>) -> io::Result<()> {
    apply(SockRef::from(stream), keepalive)
}

/// The same options on a listening socket. Linux copies them to every socket it accepts, which
/// saves six system calls per connection; elsewhere [`configure`] sets them after `accept`.
pub(crate) fn configure_listener(
    listener: &tokio::net::TcpListener,
    keepalive: Option<Duration>,
) -> io::Result<()> {
    apply(SockRef::from(listener), keepalive)
}

/// Whether accepted sockets inherit what [`configure_listener`] set.
pub(crate) const INHERITED: bool = cfg!(target_os = "linux");

fn apply(socket: SockRef<'_>, keepalive: Option<Duration>) -> io::Result<()> {
    socket.set_tcp_nodelay(true)?;
    let Some(idle) = keepalive else {
        return Ok(());
    };
    let params = TcpKeepalive::new()
        .with_time(idle)
        .with_interval(keepalive_interval(idle));
    #[cfg(not(any(target_os = "windows", target_os = "openbsd", target_os = "haiku")))]
    let params = params.with_retries(KEEPALIVE_PROBES);
    socket.set_tcp_keepalive(&params)?;
    // Keepalive waits while sent data is unacknowledged (retransmissions go on for some 15
    // minutes); the user timeout gives that case the same bound.
    #[cfg(target_os = "linux")]
    socket.set_tcp_user_timeout(Some(dead_after(idle)))?;
    Ok(())
}
