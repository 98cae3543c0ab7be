//! One client connection from accept to close, phase by phase: who the client is (the PROXY
//! header), what it speaks, HTTP/2 or HTTP/1.1 (the lean path first, then hyper behind the
//! head gate), and after an accepted upgrade the tunnel. One set of [`Clocks`] runs through
//! every phase.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::accept::detect::{self, Detected, Prefixed, Silence};
use crate::accept::proxy_header::{read_origin, Origin};
use crate::config::{DestinationProtocol, Port};
use crate::conn::shared::Shared;
use crate::conn::shutdown::Watch;
use crate::conn::state::ConnCtx;
use crate::h1::head_gate::HeadGate;
use crate::h1::lean::{self, Env, Outcome};
use crate::h1::server as h1_server;
use crate::h2::server as h2_server;
use crate::http::clocks::Clocks;
use crate::http::forwarding::Forwarding;
use crate::proxy::tunnel;
use crate::telemetry::metrics::Metrics;

/// Runs one accepted connection to its end. Never panics on anything the peer sends.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    port: Port,
    permit: OwnedSemaphorePermit,
) {
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    shared.metrics.accepted(port);
    let open = OpenGuard {
        metrics: shared.metrics.clone(),
        _permit: permit,
    };
    let Some(origin) = origin(&shared, &mut stream, peer).await else {
        return;
    };
    let forwarding = Forwarding::new(
        origin.client,
        origin.destination_port,
        shared.config.vpc_endpoint_header.clone(),
        origin.vpce.as_deref(),
    );
    let ctx = Arc::new(ConnCtx::new(forwarding, port, origin.health_only));
    let mut clocks = Clocks::new(&shared.config);
    let mut buf = BytesMut::from(origin.leftover);
    // A connection without a PROXY header is a health check: HTTP/1.1 `/ping` only.
    if !origin.health_only {
        match speaks(&ctx, &mut stream, &mut buf, &mut clocks).await {
            Some(Detected::Http1) => {}
            Some(Detected::H2) => {
                let io = Prefixed::new(buf.freeze(), stream);
                h2_server::serve(shared.clone(), ctx, io, &mut clocks).await;
                return;
            }
            None => return,
        }
    }
    let mut hard_stop = Watch::new(&shared.drain.hard_stop);
    let Some((stream, buf)) =
        lean_path(&shared, &ctx, (stream, buf), &mut clocks, &mut hard_stop).await
    else {
        return;
    };
    let io = HeadGate::new(
        stream,
        buf,
        ctx.clone(),
        shared.metrics.clone(),
        shared.limits.clone(),
        shared.config.send_timeout,
    );
    match h1_server::serve(&shared, &ctx, io, &mut clocks, &mut hard_stop).await {
        Ok(Some(pending)) => {
            drop(hard_stop);
            // The tunnel holds the connection's slot until it ends.
            tunnel::start::<HeadGate>(&shared, ctx.forwarding.client, pending, open);
        }
        Ok(None) => {}
        Err(why) => tracing::debug!(client = %ctx.forwarding.client, why, "closing connection"),
    }
}

/// Reads the PROXY header: who the client is. `None` (counted and logged) when the connection
/// is refused.
async fn origin(shared: &Shared, stream: &mut TcpStream, peer: SocketAddr) -> Option<Origin> {
    match read_origin(stream, peer, &shared.config).await {
        Ok(origin) => Some(origin),
        Err(refusal) => {
            shared.metrics.refused(&refusal);
            if refusal.quiet() {
                tracing::debug!(%peer, reason = %refusal, "connection closed before a header");
            } else {
                tracing::warn!(%peer, reason = %refusal, "connection refused");
            }
            None
        }
    }
}

/// What the client speaks, from its first bytes; `None` (logged) when it says nothing in time.
async fn speaks(
    ctx: &ConnCtx,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    clocks: &mut Clocks,
) -> Option<Detected> {
    let client = ctx.forwarding.client;
    match detect::read_until_known(stream, buf, clocks).await {
        Ok(detected) => Some(detected),
        Err(Silence::Idle) => {
            tracing::debug!(%client, "closing connection: no request");
            None
        }
        Err(Silence::Stalled) => {
            tracing::warn!(%client, "request did not arrive within REQUEST_HEADER_TIMEOUT; closing");
            None
        }
    }
}

/// Serves what the lean path takes on the TLS port; hands back the socket and the bytes not
/// yet answered when hyper is needed, `None` when the connection is finished.
async fn lean_path(
    shared: &Shared,
    ctx: &ConnCtx,
    (stream, buf): (TcpStream, BytesMut),
    clocks: &mut Clocks,
    hard_stop: &mut Watch<'_>,
) -> Option<(TcpStream, BytesMut)> {
    // The lean path speaks HTTP/1.1 to the app; with h2c every request goes through hyper.
    let lean = shared.config.destination_protocol != DestinationProtocol::H2c;
    if ctx.port != Port::Tls || ctx.health_only || !lean {
        return Some((stream, buf));
    }
    let mut counts = lean::Counts::default();
    let env = Env {
        upstream: &shared.upstream,
        metrics: &shared.metrics,
        config: &shared.config,
        drain: &shared.drain,
        limits: &shared.limits,
    };
    let outcome = tokio::select! {
        biased;
        _ = hard_stop => Outcome::Closed("shutdown deadline (SHUTDOWN_TIMEOUT) reached"),
        outcome = lean::serve(&env, ctx, (stream, clocks), buf, &mut counts) => outcome,
    };
    ctx.bytes_read.fetch_add(counts.read, Ordering::Relaxed);
    ctx.bytes_written
        .fetch_add(counts.written, Ordering::Relaxed);
    match outcome {
        Outcome::Handoff(stream, buf) => Some((stream, buf)),
        Outcome::Closed(why) => {
            shared.metrics.client_bytes(counts.read, counts.written);
            tracing::debug!(client = %ctx.forwarding.client, why, "closing connection");
            None
        }
    }
}

/// Counts the connection as open until it ends (tunnel included), holding its
/// `MAX_CONNECTIONS` slot.
struct OpenGuard {
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.metrics.closed();
    }
}
