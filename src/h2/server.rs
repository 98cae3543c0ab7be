//! HTTP/2 clients: after the PROXY header, a connection that starts with the HTTP/2 preface (an
//! NLB TLS listener forwarding a client that negotiated h2) is served by hyper's HTTP/2 server.
//! Each stream is held to the rules every HTTP/1.1 request is: the same checks, forwarding
//! headers, `/ping`, redirect, timeouts, limits, access line and metrics. Streams reach the app
//! over pooled HTTP/1.1 or over h2c (`DESTINATION_PROTOCOL`); WebSockets arrive as extended
//! CONNECT (RFC 8441) and go to the app as an HTTP/1.1 upgrade.
//!
//! What bounds a connection: `H2_MAX_STREAMS` concurrent streams, fixed flow-control windows
//! (so a client that never reads holds at most a window per stream, and only until
//! `SEND_TIMEOUT`), `MAX_HEADER_BYTES` for the header list, h2's limits on reset streams
//! (rapid reset) and CONTINUATION frames, and [`crate::h2::guard`]'s on PING and SETTINGS floods; a
//! client that trips one gets GOAWAY and a warning.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Config;
use crate::conn::send_timeout::{self, StallWatch, Stalls};
use crate::conn::shared::Shared;
use crate::conn::shutdown::Watch;
use crate::conn::state::ConnCtx;
use crate::h2::body::StreamBody;
use crate::h2::guard::{Guarded, Verdict, CONTROL_FRAMES_PER_SECOND};
use crate::h2::service;
use crate::h2::streams::{Inbox, Streams};
use crate::http::clocks::{Clocks, Phase};
use crate::http::error::ErrorChain;

/// Flow-control window per stream: what a client that never reads can make the proxy hold.
const STREAM_WINDOW: u32 = 256 * 1024;
/// Flow-control window per connection, shared by its streams.
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Bytes buffered for sending per stream before the app is read no further.
const SEND_BUFFER: usize = 256 * 1024;
/// Streams a client may open and reset before the server has seen them (CVE-2023-44487).
const PENDING_RESETS: usize = 20;
/// After a GOAWAY for an expired clock, how long a client has to let the connection go (the
/// graceful GOAWAY waits for a PING round trip that a silent client never makes).
const GOAWAY_GRACE: Duration = Duration::from_secs(2);
/// Streams the proxy may reset for a client's errors before it sends GOAWAY.
const LOCAL_ERROR_RESETS: usize = 256;

/// hyper's HTTP/2 server settings for one connection, whose streams `exec` takes.
fn builder(config: &Config, exec: Inbox) -> http2::Builder<Inbox> {
    let mut b = http2::Builder::new(exec);
    b.timer(TokioTimer::new())
        .max_concurrent_streams(config.h2_max_streams)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .adaptive_window(false)
        .max_send_buf_size(SEND_BUFFER)
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(PENDING_RESETS)
        .max_local_error_reset_streams(LOCAL_ERROR_RESETS);
    // Chrome uses WebSockets over HTTP/2 wherever this is advertised, so only then.
    if config.upgrade_protocols.iter().any(|p| p == "websocket") {
        b.enable_connect_protocol();
    }
    b
}

/// Serves one HTTP/2 client connection to its end; `io` replays the bytes already read.
pub(crate) async fn serve<IO>(shared: Arc<Shared>, ctx: Arc<ConnCtx>, io: IO, clocks: &mut Clocks)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    shared.metrics.h2_connection(1);
    let _open = Gauge(&shared);
    let started = Arc::new(AtomicBool::new(false));
    let stalls = Arc::new(Stalls::default());
    let svc = {
        let (shared, ctx, started) = (shared.clone(), ctx.clone(), started.clone());
        let stalls = stalls.clone();
        service_fn(move |req| {
            started.store(true, Ordering::Relaxed);
            let out = StreamBody::open(shared.clone(), ctx.clone(), stalls.clone());
            service::stream(shared.clone(), ctx.clone(), out, req)
        })
    };
    let config = &shared.config;
    let mut stall = StallWatch::new(config.send_timeout, stalls);
    let mut streams = Streams::default();
    let h2 = builder(config, streams.executor());
    let verdict = Arc::new(Verdict::default());
    let io = TokioIo::new(Guarded::new(io, verdict.clone()));
    let mut conn = pin!(h2.serve_connection(io, svc));
    let mut stop = Watch::new(&shared.drain.leaving);
    let mut hard_stop = Watch::new(&shared.drain.hard_stop);
    // Until the first stream, its headers are the head that has begun.
    let accepted = Phase::Head {
        started: tokio::time::Instant::now(),
    };
    let mut life = Life::Serving;
    let client = ctx.forwarding.client;
    let ended = poll_fn(|cx| {
        if hard_stop.poll_set(cx) {
            return Poll::Ready(Ok(()));
        }
        if matches!(life, Life::Serving) && stop.poll_set(cx) {
            // From SIGTERM on: GOAWAY with the last stream id, so the client opens its next
            // streams elsewhere; open streams finish within SHUTDOWN_TIMEOUT.
            conn.as_mut().graceful_shutdown();
            life = Life::Draining;
        }
        streams.poll_running(cx);
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        streams.poll(cx);
        if !matches!(life, Life::Closing { .. }) {
            let why = if let Some(kind) = verdict.flood() {
                Some(format!("{kind} flood, more than {CONTROL_FRAMES_PER_SECOND} in a second"))
            } else if let Poll::Ready(limit) = stall.poll(cx) {
                verdict.stalled();
                Some(send_timeout::why(limit))
            } else {
                None
            };
            if let Some(why) = why {
                // The guard has the GOAWAY ready; h2's next write sends it.
                tracing::warn!(%client, reason = "ENHANCE_YOUR_CALM", "HTTP/2 connection closed with GOAWAY: {why}");
                conn.as_mut().graceful_shutdown();
                life = Life::closing(Cut::Misbehaved);
                // hyper writes the GOAWAY when the connection is polled again.
                cx.waker().wake_by_ref();
            }
        }
        if matches!(life, Life::Serving) {
            let first = !started.load(Ordering::Relaxed);
            let phase = if first { accepted } else { ctx.phase() };
            if clocks.poll_expired(cx, phase).is_ready() {
                if first {
                    tracing::warn!(%client, "no HTTP/2 request within REQUEST_HEADER_TIMEOUT; closing");
                }
                conn.as_mut().graceful_shutdown();
                life = Life::closing(Cut::Expired);
                // hyper writes the GOAWAY when the connection is polled again.
                cx.waker().wake_by_ref();
            }
        }
        if let Life::Closing { grace, .. } = &mut life {
            // The GOAWAY's grace is over: close whatever the client still holds open.
            if grace.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
        }
        Poll::Pending
    })
    .await;
    let misbehaved = matches!(
        life,
        Life::Closing {
            cut: Cut::Misbehaved,
            ..
        }
    );
    match ended {
        Err(e) if !misbehaved => report(client, &e),
        _ => {}
    }
}

/// Where an HTTP/2 connection is in its life.
enum Life {
    /// Serving streams, its clocks running.
    Serving,
    /// GOAWAY sent for the drain: open streams finish within `SHUTDOWN_TIMEOUT`.
    Draining,
    /// GOAWAY sent to cut the connection: the client has until `grace` to let it go.
    Closing {
        grace: Pin<Box<tokio::time::Sleep>>,
        cut: Cut,
    },
}

/// Why the proxy cut an HTTP/2 connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// A flood, or a client that stopped reading: warned about when it was found.
    Misbehaved,
    /// A clock ran out.
    Expired,
}

impl Life {
    /// After a GOAWAY that cuts the connection: the grace a client gets to let it go (the
    /// graceful GOAWAY waits for a PING round trip that a silent client never makes).
    fn closing(cut: Cut) -> Life {
        Life::Closing {
            grace: Box::pin(tokio::time::sleep(GOAWAY_GRACE)),
            cut,
        }
    }
}

/// Says why a connection ended with an error: a warning when the proxy sent GOAWAY for the
/// client's misbehaviour (a flood, an oversized header list, a protocol error), `debug` when
/// the client simply went away.
fn report(client: std::net::SocketAddr, e: &hyper::Error) {
    let h2 = crate::http::error::causes(e).find_map(|c| c.downcast_ref::<h2::Error>());
    match h2 {
        Some(h2) if h2.is_go_away() && !h2.is_remote() => {
            let reason = h2.reason().map(|r| format!("{r:?}")).unwrap_or_default();
            tracing::warn!(%client, reason, error = %ErrorChain(e), "HTTP/2 connection closed with GOAWAY");
        }
        _ => tracing::debug!(%client, error = %ErrorChain(e), "HTTP/2 connection ended"),
    }
}

/// Counts a connection as open until dropped.
struct Gauge<'a>(&'a Shared);

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.metrics.h2_connection(-1);
    }
}
