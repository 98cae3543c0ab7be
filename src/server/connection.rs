//! One client connection from accept to close, phase by phase: who the client is (the PROXY
//! header), what it speaks, HTTP/2 or HTTP/1.1 (the lean path first, then hyper behind the
//! head gate), and after an accepted upgrade the tunnel. One set of [`Clocks`] runs through
//! every phase.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::accept::tls::TlsStream;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::accept::detect::{self, Detected, Prefixed, Silence};
use crate::accept::proxy_header::{read_origin, Origin};
use crate::accept::tls::{self, Terminator};
use crate::config::{DestinationProtocol, Port, TlsMode};
use crate::conn::shared::Shared;
use crate::conn::shutdown::Watch;
use crate::conn::state::{ConnCtx, PendingUpgrade};
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
    )
    .with_peer(peer);
    let mut clocks = Clocks::new(&shared.config);
    let mut buf = BytesMut::from(origin.leftover);
    // A connection without a PROXY header is a health check: cleartext HTTP/1.1 `/ping` only.
    let health_only = origin.health_only;
    if let (Port::Tls, false, Some(tls)) = (port, health_only, shared.tls.clone()) {
        match tls::starts_handshake(&mut stream, &mut buf, &mut clocks).await {
            Ok(true) => {
                let io = Prefixed::new(buf.split().freeze(), stream);
                over_tls(&shared, &tls, io, forwarding, &mut clocks, open).await;
                return;
            }
            Ok(false) if tls.mode() == TlsMode::Required => {
                shared.metrics.refused_cleartext();
                tracing::warn!(client = %forwarding.client, "cleartext connection refused (TLS_MODE=required)");
                return;
            }
            Ok(false) => {}
            Err(silence) => return said_nothing(forwarding.client, silence),
        }
    }
    let header = shared.config.tls.client_cert_header.clone();
    let ctx = Arc::new(ConnCtx::new(
        forwarding.with_tls(header, None),
        port,
        health_only,
    ));
    if !health_only {
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
    if let Some(pending) = http1(&shared, &ctx, (stream, buf), &mut clocks, hard_stop).await {
        // The tunnel holds the connection's slot until it ends; hyper gives the socket back.
        tunnel::start::<HeadGate>(&shared, ctx.forwarding.client, pending, open);
    }
}

/// A connection that started a TLS handshake: ends it, then serves what ALPN chose (or, when
/// the client named nothing, what the first bytes say).
async fn over_tls(
    shared: &Arc<Shared>,
    tls: &Terminator,
    io: Prefixed<TcpStream>,
    forwarding: Forwarding,
    clocks: &mut Clocks,
    open: OpenGuard,
) {
    let client = forwarding.client;
    let (mut stream, facts) = match tls.handshake(io, clocks).await {
        Ok(done) => {
            shared.metrics.tls.handshake(None);
            done
        }
        Err(failure) => {
            shared.metrics.tls.handshake(Some(&failure));
            // Scanners and probes do this all day: counted, and logged for whoever looks.
            tracing::debug!(%client, result = failure.label(), reason = failure.to_string(), "TLS handshake failed");
            return;
        }
    };
    let alpn = facts.alpn;
    let header = shared.config.tls.client_cert_header.clone();
    let ctx = Arc::new(ConnCtx::new(
        forwarding.with_tls(header, Some(facts)),
        Port::Tls,
        false,
    ));
    let mut buf = BytesMut::new();
    let detected = match alpn {
        Some("h2") => Detected::H2,
        Some(_) => Detected::Http1,
        None => match speaks(&ctx, &mut stream, &mut buf, clocks).await {
            Some(detected) => detected,
            None => return,
        },
    };
    if detected == Detected::H2 {
        let io = Prefixed::new(buf.freeze(), stream);
        return h2_server::serve(shared.clone(), ctx, io, clocks).await;
    }
    let mut hard_stop = Watch::new(&shared.drain.hard_stop);
    let Some((stream, buf)) = lean_path(shared, &ctx, (stream, buf), clocks, &mut hard_stop).await
    else {
        return;
    };
    if let Some(pending) = http1(shared, &ctx, (stream, buf), clocks, hard_stop).await {
        tunnel::start::<HeadGate<TlsStream<Prefixed<TcpStream>>>>(shared, client, pending, open);
    }
}

/// Serves HTTP/1.1 through hyper behind the head gate; the upgrade the app accepted, if any.
async fn http1<S>(
    shared: &Arc<Shared>,
    ctx: &Arc<ConnCtx>,
    (stream, buf): (S, BytesMut),
    clocks: &mut Clocks,
    mut hard_stop: Watch<'_>,
) -> Option<PendingUpgrade>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = HeadGate::new(
        stream,
        buf,
        ctx.clone(),
        shared.metrics.clone(),
        shared.limits.clone(),
        shared.config.send_timeout,
    );
    match h1_server::serve(shared, ctx, io, clocks, &mut hard_stop).await {
        Ok(pending) => pending,
        Err(why) => {
            tracing::debug!(client = %ctx.forwarding.client, why, "closing connection");
            None
        }
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
                tracing::debug!(%peer, reason = refusal.to_string(), "connection closed before a header");
            } else {
                tracing::warn!(%peer, reason = refusal.to_string(), "connection refused");
            }
            None
        }
    }
}

/// What the client speaks, from its first bytes; `None` (logged) when it says nothing in time.
async fn speaks<S: AsyncRead + Unpin>(
    ctx: &ConnCtx,
    stream: &mut S,
    buf: &mut BytesMut,
    clocks: &mut Clocks,
) -> Option<Detected> {
    match detect::read_until_known(stream, buf, clocks).await {
        Ok(detected) => Some(detected),
        Err(silence) => {
            said_nothing(ctx.forwarding.client, silence);
            None
        }
    }
}

/// Logs a connection that sent nothing, or not enough, in time.
fn said_nothing(client: SocketAddr, silence: Silence) {
    match silence {
        Silence::Idle => tracing::debug!(%client, "closing connection: no request"),
        Silence::Stalled => {
            tracing::warn!(%client, "request did not arrive within REQUEST_HEADER_TIMEOUT; closing");
        }
    }
}

/// Serves what the lean path takes on the TLS port; hands back the socket and the bytes not
/// yet answered when hyper is needed, `None` when the connection is finished.
async fn lean_path<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    ctx: &ConnCtx,
    (stream, buf): (S, BytesMut),
    clocks: &mut Clocks,
    hard_stop: &mut Watch<'_>,
) -> Option<(S, BytesMut)> {
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
