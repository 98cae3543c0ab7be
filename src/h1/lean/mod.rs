//! The lean path for the common request: HTTP/1.1, no body, no upgrade, on the forwarding port.
//!
//! Its head is read once ([`request_head::read`], which applies [`crate::http::rules`]) and passed
//! to the app as the client's own bytes with the forwarding headers swapped in; the app's
//! response comes back the same way, its body copied as it arrives. No header maps, no
//! re-encoding, no channel between a server and a client half: that was most of the proxy's
//! user-space work per request (`bench/NOTES.md`).
//!
//! A head the rules refuse is answered here and the connection closed. Anything else it does
//! not take (a body, an upgrade, HTTP/1.0, `Expect`, `/ping`, an absolute-form target) hands
//! the connection, with the bytes read so far, to hyper for the rest of its life
//! ([`Outcome::Handoff`]), behind the same head gate ([`crate::h1::head_gate`]).

mod exchange;

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::ops::Range;
use std::pin::Pin;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::Config;
use crate::conn::send_timeout::SendClock;
use crate::conn::shutdown::{Drain, Watch};
use crate::conn::state::ConnCtx;
use crate::h1::request_head::{self, Head, Refused};
use crate::http::clocks::{Clocks, Expiry, Phase};
use crate::http::forwarding::Forwarding;
use crate::http::head::HeadWriter;
use crate::http::rules::{self, BodyLength, Ids, RequestRules};
use crate::http::rules::{HeadLimits, MAX_HEADERS};
use crate::http::Protocol;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::request::Answered;
use crate::upstream::Upstream;

/// Read buffers larger than this are not kept between requests.
const KEEP_CAPACITY: usize = 16 * 1024;

/// How the lean path left a connection.
pub(crate) enum Outcome<S> {
    /// The connection is finished, for this reason.
    Closed(&'static str),
    /// hyper takes over: the socket, and the bytes read from it and not yet answered.
    Handoff(S, BytesMut),
}

/// Bytes moved on the client's socket, for the metrics.
#[derive(Default)]
pub(crate) struct Counts {
    pub(crate) read: u64,
    pub(crate) written: u64,
}

/// What the lean path uses of the proxy.
pub(crate) struct Env<'a> {
    pub(crate) upstream: &'a Upstream,
    pub(crate) metrics: &'a Metrics,
    pub(crate) config: &'a Config,
    pub(crate) drain: &'a Drain,
    pub(crate) limits: &'a HeadLimits,
}

/// A request the lean path takes, as read from the client's head.
struct Plan {
    head_len: usize,
    method: Range<usize>,
    /// The path without its query, for the access log.
    path: Range<usize>,
    /// `Host` and `User-Agent`, for the access log.
    host: Option<Range<usize>>,
    user_agent: Option<Range<usize>>,
    /// What the rules decided about it.
    rules: RequestRules,
    /// Its request id and trace ids.
    ids: Ids,
}

/// What the client's buffered bytes hold.
enum Step {
    /// A request for the lean path; its upstream head has been written out.
    Take(Plan),
    /// Not a whole head yet.
    Partial,
    /// A head the rules refuse, and whether it was a `HEAD`.
    Refuse(Refused),
    /// One for hyper.
    Handoff,
}

/// The client connection as the lean path holds it.
struct Client<'a, S> {
    env: &'a Env<'a>,
    ctx: &'a ConnCtx,
    stream: S,
    /// `SEND_TIMEOUT` for every write to `stream`.
    send: SendClock,
    counts: &'a mut Counts,
    /// The connection's clocks, kept for hyper's path if the connection goes there.
    clocks: &'a mut Clocks,
    stop: Watch<'a>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<'_, S> {
    /// Writes `a` then `b` to the client in as few system calls as the socket allows, within
    /// `SEND_TIMEOUT`.
    async fn write(&mut self, a: &[u8], b: &[u8]) -> io::Result<()> {
        let mut slices = [IoSlice::new(a), IoSlice::new(b)];
        let mut bufs = &mut slices[..];
        IoSlice::advance_slices(&mut bufs, 0);
        let (stream, send) = (&mut self.stream, &mut self.send);
        while !bufs.is_empty() {
            let n = poll_fn(|cx| {
                let attempt = Pin::new(&mut *stream).poll_write_vectored(cx, bufs);
                send.poll(cx, attempt)
            })
            .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut bufs, n);
        }
        Ok(())
    }
}

/// Serves requests on `client` until it closes or needs hyper. `buf` holds what was read past
/// the PROXY header.
pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    env: &Env<'_>,
    ctx: &ConnCtx,
    (client, clocks): (S, &mut Clocks),
    mut buf: BytesMut,
    counts: &mut Counts,
) -> Outcome<S> {
    let mut conn = Client {
        env,
        ctx,
        stream: client,
        send: SendClock::new(
            env.config.send_timeout,
            ctx.forwarding.client,
            Protocol::Http1,
        ),
        counts,
        clocks,
        stop: Watch::new(&env.drain.stop_accepting),
    };
    let mut out = Vec::new();
    let mut reply_head = Vec::new();
    let mut ubuf = BytesMut::new();
    // When the connection last fell idle (a response's end) and when the head being read
    // began: each phase's clock starts from them.
    let mut idle_since: Option<std::time::Instant> = None;
    let mut head_started: Option<tokio::time::Instant> = None;
    loop {
        let plan = match plan_request(&buf, &ctx.forwarding, env.limits, &mut out) {
            Step::Take(plan) => plan,
            Step::Handoff => return Outcome::Handoff(conn.stream, buf),
            Step::Refuse(refused) => {
                let answer = request_head::refuse(&ctx.forwarding, env.metrics, refused);
                if conn.write(&answer, &[]).await.is_ok() {
                    conn.counts.written += answer.len() as u64;
                }
                return closed(&mut conn, "request refused").await;
            }
            Step::Partial => {
                let marks = (&mut idle_since, &mut head_started);
                if let Err(why) = read_more(&mut conn, &mut buf, marks).await {
                    return closed(&mut conn, why).await;
                }
                continue;
            }
        };
        head_started = None;
        let answer = exchange::exchange(&mut conn, &out, &plan, &mut reply_head, &mut ubuf).await;
        if ubuf.capacity() > KEEP_CAPACITY {
            ubuf = BytesMut::new();
        }
        let replied = match answer {
            Ok(a) => a,
            Err(why) => {
                tracing::debug!(client = %ctx.forwarding.client, why, "closing connection mid-response");
                return closed(&mut conn, why).await;
            }
        };
        let text = |r: &Range<usize>| std::str::from_utf8(&buf[r.clone()]).unwrap_or("-");
        let answered = Answered {
            from: &ctx.forwarding,
            protocol: Protocol::Http1,
            method: text(&plan.method),
            path: text(&plan.path),
            host: plan.host.as_ref().map(text),
            user_agent: plan.user_agent.as_ref().map(text),
            ids: &plan.ids,
            status: replied.status,
            elapsed: replied.to_head,
            upstream: true,
        };
        if answered.count(env.metrics, env.config.log_health_checks) {
            answered.log(&replied.ended);
        }
        buf.advance(plan.head_len);
        idle_since = Some(replied.ended_at);
        if replied.close {
            return closed(&mut conn, "closed after the response").await;
        }
        if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
            buf = BytesMut::new();
        }
    }
}

/// Runs `fut` until `deadline`; `None` if the deadline came first.
///
/// How long a client has to take the end of the connection (a TLS close_notify) before it is
/// simply dropped.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Ends the client connection: a socket sends its FIN, a TLS stream its close_notify first, so
/// that a client can tell the end from a cut.
async fn closed<S: AsyncWrite + Unpin>(conn: &mut Client<'_, S>, why: &'static str) -> Outcome<S> {
    let _ = tokio::time::timeout(CLOSE_GRACE, conn.stream.shutdown()).await;
    Outcome::Closed(why)
}

/// Reads more of a request head: the keep-alive clock runs while nothing has arrived, the
/// request-header clock from the first byte; a drain closes a connection that is idle.
async fn read_more<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Client<'_, S>,
    buf: &mut BytesMut,
    (idle_since, head_started): (
        &mut Option<std::time::Instant>,
        &mut Option<tokio::time::Instant>,
    ),
) -> Result<(), &'static str> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    let idle = buf.is_empty();
    // Idle from the end of the last response, whose clock reading is reused.
    let last_end = idle_since.take();
    let phase = if idle {
        let since = last_end.map(tokio::time::Instant::from_std);
        Phase::Idle {
            since: since.unwrap_or_else(tokio::time::Instant::now),
        }
    } else {
        Phase::Head {
            started: *head_started.get_or_insert_with(tokio::time::Instant::now),
        }
    };
    let (stream, stop) = (&mut conn.stream, &mut conn.stop);
    let read = async {
        tokio::select! {
            biased;
            read = stream.read_buf(buf) => Ok(read),
            _ = stop, if idle => Err("draining"),
        }
    };
    let n = match conn.clocks.until(phase, read).await {
        Ok(Ok(Ok(n))) => n,
        Ok(Ok(Err(_))) => return Err("client read error"),
        Ok(Err(why)) => return Err(why),
        Err(Expiry::KeepAlive) => return Err("keep-alive idle timeout"),
        Err(Expiry::RequestHeader) => {
            tracing::warn!(client = %conn.ctx.forwarding.client, "request headers not received within REQUEST_HEADER_TIMEOUT; closing");
            return Err("request header timeout");
        }
    };
    if n == 0 {
        return Err("client closed the connection");
    }
    conn.counts.read += n as u64;
    Ok(())
}

/// Reads the client's head and, if the lean path takes it, writes the head the app gets into
/// `out`: the client's request line and the headers the rules forward, plus the proxy's own
/// forwarding headers.
fn plan_request(buf: &[u8], from: &Forwarding, limits: &HeadLimits, out: &mut Vec<u8>) -> Step {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let parsed = match request_head::read(buf, &mut headers, limits) {
        Head::Partial => return Step::Partial,
        Head::Refused(refused) => return Step::Refuse(refused),
        Head::Parsed(parsed) => parsed,
    };
    // `/ping` (no rules) is hyper's to answer.
    let Some(rules) = parsed.rules else {
        return Step::Handoff;
    };
    let bodiless = matches!(rules.body, BodyLength::None | BodyLength::Length(0));
    if !parsed.http11
        || rules.expect
        || !bodiless
        || rules.upgrade.is_some()
        || !parsed.target.starts_with('/')
    {
        return Step::Handoff;
    }
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + s.len()
    };
    let (mut host, mut user_agent) = (None, None);
    let mut head = HeadWriter::request(out, parsed.method, parsed.target);
    let ids = parsed.ids;
    for h in &headers[..parsed.headers] {
        if h.name.eq_ignore_ascii_case("host") {
            host = Some(at(h.value));
        } else if h.name.eq_ignore_ascii_case("user-agent") {
            user_agent = Some(at(h.value));
        }
        if rules.forwards(h.name, from, &ids) {
            head.field(h.name.as_bytes(), h.value);
        }
    }
    for (name, value) in rules::proxy_headers(from, &ids) {
        head.field(name.as_str().as_bytes(), value.as_bytes());
    }
    head.end();
    let bare_path = parsed.target.split('?').next().unwrap_or(parsed.target);
    Step::Take(Plan {
        head_len: parsed.len,
        method: at(parsed.method.as_bytes()),
        path: at(bare_path.as_bytes()),
        host,
        user_agent,
        rules,
        ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits {
            max_header_bytes: 8192,
            upgrades: vec!["websocket".into()],
            ids: rules::IdRules::off(),
        }
    }

    /// The forwarding facts of client 192.0.2.1 reaching the balancer on port 443.
    fn from() -> Forwarding {
        Forwarding::new("192.0.2.1:5000".parse().unwrap(), Some(443), None, None)
    }

    #[test]
    fn the_app_gets_the_clients_head_with_forwarding_headers_replaced() {
        let head = b"GET /a?b=%20 HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\n\
                     Keep-Alive: 5\r\nX-Real-IP: 6.6.6.6\r\nX_Forwarded_Proto: http\r\n\
                     Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nAccept: */*\r\n\r\nGET";
        let mut out = Vec::new();
        let Step::Take(plan) = plan_request(head, &from(), &limits(), &mut out) else {
            panic!("taken");
        };
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /a?b=%20 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nx-forwarded-for: 192.0.2.1\r\n\
             x-forwarded-proto: https\r\nx-forwarded-port: 443\r\n\r\n"
        );
        assert_eq!(plan.head_len, head.len() - 3);
        assert_eq!(&head[plan.path], b"/a");
        assert!(!plan.rules.close && plan.rules.idempotent);
    }

    #[test]
    fn requests_hyper_must_serve_are_handed_over() {
        for head in [
            &b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: h\r\n\r\n",
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        ] {
            let step = plan_request(head, &from(), &limits(), &mut Vec::new());
            assert!(
                matches!(step, Step::Handoff),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn heads_the_rules_refuse_are_refused_here() {
        for head in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            let step = plan_request(head, &from(), &limits(), &mut Vec::new());
            assert!(
                matches!(step, Step::Refuse(..)),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn planning_never_panics_or_overruns(input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let mut out = Vec::new();
            if let Step::Take(plan) = plan_request(&input, &from(), &limits(), &mut out) {
                proptest::prop_assert!(plan.head_len <= input.len());
                proptest::prop_assert!(out.ends_with(b"\r\n\r\n"));
            }
        }
    }
}
