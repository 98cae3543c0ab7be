//! One exchange on the lean path: the request head to the app and its judged response head
//! back ([`crate::upstream::exchange`]), that head rewritten for the client, and the body copied to the
//! client as it arrives.

use std::time::Instant;

use bytes::{Buf, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

use super::{Client, Plan};
use crate::h1::request_head;
use crate::http::chunked::Chunked;
use crate::http::error::{UpstreamError, NO_RESPONSE_HEADERS};
use crate::http::head::HeadWriter;
use crate::http::rules::Framing;
use crate::proxy::failure;
use crate::telemetry::request::Ended;
use crate::upstream::exchange::{self, Judged};

/// How much of a response body is read from the app at a time.
const COPY_CHUNK: usize = 64 * 1024;

/// The app's response head, as the client will get it.
struct Reply {
    status: StatusCode,
    head_len: usize,
    framing: Framing,
    /// The app's connection can carry another request afterwards.
    reusable: bool,
    /// The client's connection closes after this response.
    close: bool,
}

/// Writes the client's response head for the app's judged one into `out`.
fn client_head(judged: Judged<'_>, plan: &Plan, draining: bool, out: &mut Vec<u8>) -> Reply {
    let Judged {
        status,
        reason,
        fields,
        rules: r,
        head_len,
    } = judged;
    let close = plan.rules.close || draining || r.framing == Framing::Close;
    let mut head = HeadWriter::response(out, status, reason);
    let ids = &plan.ids;
    for h in fields
        .iter()
        .filter(|h| r.forwards(h.name) && ids.forwards_response(h.name))
    {
        head.field(h.name.as_bytes(), h.value);
    }
    if let Some((name, value)) = ids.to_client() {
        head.field(name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(n) = r.content_length {
        head.content_length(n);
    }
    if let Some(te) = &r.transfer_encoding {
        head.field(b"transfer-encoding", te);
    }
    if close {
        head.field(b"connection", b"close");
    }
    if !r.dated {
        head.date();
    }
    head.end();
    Reply {
        status,
        head_len,
        framing: r.framing,
        reusable: r.reusable,
        close,
    }
}

/// Sends one request to the app and the response to the client, its head rewritten into
/// `out`. `Ok` carries the answer; `Err` means the response was cut short and the client
/// connection closes now.
pub(super) async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Client<'_, S>,
    head: &[u8],
    plan: &Plan,
    out: &mut Vec<u8>,
    ubuf: &mut BytesMut,
) -> Result<Replied, &'static str> {
    // One clock reading for the start, the pool's idle check and RESPONSE_TIMEOUT's deadline.
    let started = Instant::now();
    let env = conn.env;
    let upstream = env.upstream;
    let draining = env.drain.is_draining();
    let asking = exchange::exchange(upstream, started, head, &plan.rules, ubuf, |judged| {
        client_head(judged, plan, draining, out)
    });
    let deadline = tokio::time::Instant::from_std(started) + upstream.response_timeout;
    let (mut app, reply, head_at) = match conn.clocks.before(deadline, asking).await {
        Some(Ok(found)) => found,
        Some(Err(f)) => return refuse(conn, f.kind, &f.why, plan, started).await,
        None => {
            let why = NO_RESPONSE_HEADERS;
            return refuse(conn, UpstreamError::Timeout, why, plan, started).await;
        }
    };
    let to_head = head_at.saturating_duration_since(started);
    let (clean, sent) = relay_body(conn, &mut app, out, &reply, ubuf).await?;
    let ended_at = Instant::now();
    if clean && reply.reusable {
        upstream.put_plain(app, ended_at);
    }
    Ok(Replied {
        status: reply.status,
        close: reply.close,
        to_head,
        ended: Ended {
            received: 0,
            sent,
            total: ended_at.saturating_duration_since(started),
        },
        ended_at,
    })
}

/// How a request was answered.
pub(super) struct Replied {
    pub(super) status: StatusCode,
    /// The client connection must close after it.
    pub(super) close: bool,
    /// From the request's head to the response's head.
    pub(super) to_head: std::time::Duration,
    /// The body sizes and the total time.
    pub(super) ended: Ended,
    /// When the response ended: the connection is idle from then.
    pub(super) ended_at: Instant,
}

/// Sends the response head and body to the client as the body arrives. `Ok` with whether the
/// body ended exactly where its framing said, so the app's connection can be used again, and
/// the body bytes sent (chunk framing included).
async fn relay_body<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<'_, S>,
    app: &mut TcpStream,
    head: &[u8],
    reply: &Reply,
    ubuf: &mut BytesMut,
) -> Result<(bool, u64), &'static str> {
    let client_addr = client.ctx.forwarding.client;
    let mut sent = 0;
    ubuf.advance(reply.head_len);
    let mut left = match reply.framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    let mut chunks = Chunked::default();
    let mut first = Some(head);
    loop {
        let mut malformed = None;
        let (take, done) = match reply.framing {
            Framing::Empty => (0, true),
            Framing::Length(_) => {
                let take = (ubuf.len() as u64).min(left) as usize;
                left -= take as u64;
                (take, left == 0)
            }
            // What came before the fault goes out first, as it would had it arrived alone.
            Framing::Chunked => chunks.feed(ubuf).unwrap_or_else(|bad| {
                malformed = Some(bad.why);
                (bad.settled, false)
            }),
            Framing::Close => (ubuf.len(), false),
        };
        let head = first.take().unwrap_or_default();
        client
            .write(head, &ubuf[..take])
            .await
            .map_err(|_| "client write error")?;
        client.counts.written += (head.len() + take) as u64;
        sent += take as u64;
        ubuf.advance(take);
        if let Some(why) = malformed {
            tracing::warn!(client = %client_addr, error = why, "malformed chunked response from the app");
            return Err("malformed chunked response");
        }
        if done {
            // Bytes past the end of the response mean the app and the proxy disagree on framing.
            return Ok((ubuf.is_empty(), sent));
        }
        // What is left is the start of a chunk-size or trailer line: kept, and read on to.
        ubuf.reserve(COPY_CHUNK);
        match app.read_buf(ubuf).await {
            Ok(0) if reply.framing == Framing::Close => return Ok((false, sent)),
            Ok(0) | Err(_) => {
                tracing::warn!(client = %client_addr, "the app closed the connection mid-response");
                return Err("the app closed the connection mid-response");
            }
            Ok(_) => {}
        }
    }
}

/// Logs an upstream failure and gives the client the answer every path gives for it.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Client<'_, S>,
    kind: UpstreamError,
    why: &str,
    plan: &Plan,
    started: Instant,
) -> Result<Replied, &'static str> {
    let env = conn.env;
    let client = conn.ctx.forwarding.client;
    let (status, text) = failure::answer(env.upstream, env.metrics, client, kind, &why);
    let close = plan.rules.close || env.drain.is_draining();
    let bytes = request_head::answer_bytes(status, text, plan.rules.head, close, &plan.ids);
    conn.write(&bytes, &[])
        .await
        .map_err(|_| "client write error")?;
    conn.counts.written += bytes.len() as u64;
    let ended_at = Instant::now();
    let total = ended_at.saturating_duration_since(started);
    Ok(Replied {
        status,
        close,
        to_head: total,
        ended: Ended {
            received: 0,
            sent: text.len() as u64,
            total,
        },
        ended_at,
    })
}
