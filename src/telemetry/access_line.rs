//! What one answered request's access line says, and its fields written straight into one
//! string: `name=value` pairs for text logs, `,"name":value` members for JSON ones.
//!
//! The line is written for every request, so it does not go field by field through tracing's
//! visitor and a `dyn fmt::Write` per piece, which cost more than the line's bytes themselves
//! (`bench/NOTES.md`). It is the access event's message, so tracing still filters it and any
//! subscriber still prints it; text is byte for byte what tracing-subscriber's formatter writes
//! for the same fields (a test in `access_log` holds the two together).

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::time::Duration;

use http::StatusCode;

use crate::http::forwarding::Forwarding;
use crate::http::rules::Ids;
use crate::http::Protocol;

/// One answered request, as its access line and its metrics see it.
pub(crate) struct Answered<'a> {
    /// Who asked.
    pub(crate) from: &'a Forwarding,
    /// What the client speaks.
    pub(crate) protocol: Protocol,
    pub(crate) method: &'a str,
    /// The target's path, without the query.
    pub(crate) path: &'a str,
    /// `Host`, or HTTP/2's `:authority`.
    pub(crate) host: Option<&'a str>,
    pub(crate) user_agent: Option<&'a str>,
    /// The request id and trace ids.
    pub(crate) ids: &'a Ids,
    pub(crate) status: StatusCode,
    /// From the request's head to the response's head.
    pub(crate) elapsed: Duration,
    /// The app was asked: `elapsed` is its time too.
    pub(crate) upstream: bool,
}

/// What only the end of a response tells.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ended {
    /// Request body bytes read from the client.
    pub(crate) received: u64,
    /// Response body bytes written to the client.
    pub(crate) sent: u64,
    /// From the request's head to the response's last byte.
    pub(crate) total: Duration,
}

/// One request's access line; `{}` writes it as text, `{:#}` as JSON members.
pub(crate) struct Line<'a> {
    pub(crate) answered: &'a Answered<'a>,
    pub(crate) ended: &'a Ended,
}

/// The longest line most requests make, so the buffer rarely grows.
const TYPICAL: usize = 640;

thread_local! {
    /// Each thread's line buffer, kept between lines: one allocation per thread, not per line.
    static BUFFER: RefCell<String> = RefCell::new(String::with_capacity(TYPICAL));
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = f.alternate();
        let mut write = |s: &mut String| {
            s.clear();
            let mut out = Out { s, json };
            self.write(&mut out);
            // Every text field starts with a space; the first is not preceded by one.
            f.write_str(if json {
                s
            } else {
                s.get(1..).unwrap_or_default()
            })
        };
        let reused = BUFFER.try_with(|b| b.try_borrow_mut().map(|mut s| write(&mut s)));
        match reused {
            Ok(Ok(written)) => written,
            // The thread is ending, or (never expected) a line is written inside a line.
            _ => write(&mut String::with_capacity(TYPICAL)),
        }
    }
}

/// A field's name as it is written before its value: ` name=` in text, `,"name":` in JSON.
struct Name {
    text: &'static str,
    json: &'static str,
}

/// The [`Name`] of a field, spelt once.
macro_rules! name {
    ($name:literal) => {
        &Name {
            text: concat!(" ", $name, "="),
            json: concat!(",\"", $name, "\":"),
        }
    };
}

impl Line<'_> {
    /// The fields under the names of the OpenTelemetry semantic conventions where they have
    /// one (README lists them). An absent value leaves its field out.
    fn write(&self, out: &mut Out) {
        let (a, ended) = (self.answered, self.ended);
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let from = a.from;
        let tls = from.tls.as_ref();
        out.bare(name!("client.address"), Some(from.client_ip()));
        out.number(name!("client.port"), Some(u64::from(from.client.port())));
        out.bare(name!("network.peer.address"), from.peer_ip.as_deref());
        out.quoted(
            name!("network.protocol.version"),
            Some(a.protocol.version()),
        );
        out.bare(name!("http.request.method"), Some(a.method));
        out.quoted(name!("url.path"), Some(a.path));
        out.quoted(name!("server.address"), a.host.map(host_name));
        out.quoted(name!("user_agent.original"), a.user_agent);
        let status = a.status.as_u16().into();
        out.number(name!("http.response.status_code"), Some(status));
        out.number(name!("http.request.body.size"), Some(ended.received));
        out.number(name!("http.response.body.size"), Some(ended.sent));
        out.number(name!("duration_us"), Some(us(ended.total)));
        out.number(name!("upstream_us"), a.upstream.then(|| us(a.elapsed)));
        out.quoted(name!("request_id"), a.ids.request_id());
        out.quoted(name!("amzn_trace_id"), a.ids.amzn_root());
        out.quoted(name!("trace_id"), a.ids.trace_id());
        out.quoted(name!("aws.vpce.id"), from.vpce());
        out.quoted(name!("tls.protocol.version"), tls.map(|t| t.version));
        out.quoted(name!("tls.cipher"), tls.map(|t| t.cipher));
        out.quoted(name!("tls.server.name"), tls.and_then(|t| t.sni.as_deref()));
        out.quoted(name!("tls.next_protocol"), tls.and_then(|t| t.alpn));
        let subject = tls.and_then(|t| t.client.as_ref());
        out.quoted(
            name!("tls.client.subject"),
            subject.map(|c| c.subject.as_str()),
        );
    }
}

/// A `Host` value without its port, and an IPv6 address without its brackets.
pub(crate) fn host_name(host: &str) -> &str {
    match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        // A byte search: ':' is ASCII, so the cut is on a character boundary.
        None => match host.bytes().rposition(|b| b == b':') {
            Some(at) => &host[..at],
            None => host,
        },
    }
}

/// The line being written.
struct Out<'s> {
    s: &'s mut String,
    json: bool,
}

impl Out<'_> {
    fn name(&mut self, name: &Name) {
        self.s
            .push_str(if self.json { name.json } else { name.text });
    }

    /// A string: quoted in text as `{:?}` quotes it, a JSON string in JSON.
    fn quoted(&mut self, name: &Name, value: Option<&str>) {
        let Some(value) = value else { return };
        self.name(name);
        if self.json {
            json_string(self.s, value);
        } else if plain(value) {
            self.s.push('"');
            self.s.push_str(value);
            self.s.push('"');
        } else {
            let _ = write!(self.s, "{value:?}");
        }
    }

    /// A value tracing records with `%` (an address, a method): as it is in text, a JSON
    /// string in JSON.
    fn bare(&mut self, name: &Name, value: Option<&str>) {
        let Some(value) = value else { return };
        self.name(name);
        if self.json {
            json_string(self.s, value);
        } else {
            self.s.push_str(value);
        }
    }

    fn number(&mut self, name: &Name, value: Option<u64>) {
        let Some(value) = value else { return };
        self.name(name);
        self.s.push_str(itoa::Buffer::new().format(value));
    }
}

/// Whether `{:?}` writes `value` as it is between quotes: printable ASCII without `"` or `\`.
/// Every byte is looked at, without an early exit, so the check runs many bytes at a time.
fn plain(value: &str) -> bool {
    value.bytes().fold(true, |ok, b| {
        ok & (b' '..=b'~').contains(&b) & (b != b'"') & (b != b'\\')
    })
}

/// `value` as a JSON string, escaped as serde_json escapes it.
fn json_string(out: &mut String, value: &str) {
    out.push('"');
    let _ = JsonEscaped(&mut *out).write_str(value);
    out.push('"');
}

/// Escapes what passes through it for the inside of a JSON string (RFC 8259 section 7).
pub(crate) struct JsonEscaped<W>(pub(crate) W);

impl<W: Write> Write for JsonEscaped<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}
