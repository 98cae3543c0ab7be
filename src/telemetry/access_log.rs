//! The access log: one line per request from every HTTP path, and the formatter that writes
//! it (and the start-up line's settings in JSON logs).
//!
//! The line is a tracing event (target `access`), so `RUST_LOG` turns it off and tests capture
//! it like any other. Its fields are its message, written at once by
//! [`Line`](crate::telemetry::access_line::Line). [`Lines`] puts the timestamp and level
//! before it in exactly the text and JSON tracing-subscriber's general formatter gives for the
//! same fields one by one (a test holds the two together; the general one applies styles even
//! with colour off and uses serde for JSON, and its cost is in `bench/NOTES.md`), and hands
//! every other event to that formatter.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::telemetry::access_line::{Answered, Ended, JsonEscaped, Line};
use crate::telemetry::log_time;

/// The target of access events, which [`Lines`] formats itself.
const TARGET: &str = "access";

/// The start-up line's field with every setting: in JSON logs, given as a JSON object
/// ([`Config::summary_json`](crate::config::Config::summary_json)) and written as one, so each
/// setting is a field of its own.
pub(crate) const SETTINGS: &str = "settings";

/// Logs one request. Its fields are written by [`Line`] as the event's message, under the
/// names of the OpenTelemetry semantic conventions where they have one (README lists them):
/// the client's address and port, the balancer's, the request, the status, the body sizes,
/// the total and the app's time in whole microseconds (the app's absent when it was not
/// asked), the ids, and only when there are some, the VPC endpoint and the TLS the proxy
/// ended. Addresses are formatted once per connection, not per line.
pub(crate) fn record(answered: &Answered<'_>, ended: &Ended) {
    tracing::event!(
        target: TARGET,
        tracing::Level::INFO,
        message = tracing::field::display(Line { answered, ended })
    );
}

/// An event formatter: access events written directly, everything else by `other`.
pub(crate) struct Lines<F> {
    /// The general formatter, for every event that is not an access line.
    pub(crate) other: F,
    /// One JSON object per line rather than text.
    pub(crate) json: bool,
}

impl<S, N, F> FormatEvent<S, N> for Lines<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        // The start-up line's `settings` is one JSON object already in JSON logs.
        let settings = self.json && meta.fields().field(SETTINGS).is_some();
        if meta.target() != TARGET && !settings {
            return self.other.format_event(ctx, w, event);
        }
        let level = meta.level().as_str();
        if self.json {
            w.write_str("{\"timestamp\":\"")?;
            log_time::write_now(&mut w)?;
            for part in ["\",\"level\":\"", level, "\""] {
                w.write_str(part)?;
            }
        } else {
            log_time::write_now(&mut w)?;
            let pad = &"     "[level.len().min(5)..];
            for part in [" ", pad, level, " ", TARGET, ":"] {
                w.write_str(part)?;
            }
        }
        if settings {
            let mut fields = JsonFields {
                w: &mut w,
                result: Ok(()),
            };
            event.record(&mut fields);
            fields.result?;
        } else {
            let mut line = Message {
                w: &mut w,
                json: self.json,
                result: Ok(()),
            };
            event.record(&mut line);
            line.result?;
        }
        if self.json {
            w.write_str(",\"target\":\"")?;
            w.write_str(meta.target())?;
            w.write_str("\"}\n")
        } else {
            w.write_str("\n")
        }
    }
}

/// Writes each field of the start-up line as `,"name":value`; its `settings` is a JSON object
/// already.
struct JsonFields<'a, 'w> {
    w: &'a mut Writer<'w>,
    /// The first write that failed; the rest are skipped.
    result: fmt::Result,
}

impl JsonFields<'_, '_> {
    /// Writes one field; `value` writes its value after the name.
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let w = &mut *self.w;
        self.result = [",\"", field.name(), "\":"]
            .into_iter()
            .try_for_each(|part| w.write_str(part))
            .and_then(|()| value(w));
    }
}

impl Visit for JsonFields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |w| json_string(w, format_args!("{value}")));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(field, |w| write!(w, "{value:?}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |w| {
            if field.name() == SETTINGS {
                write!(w, "{value:?}")
            } else {
                json_string(w, format_args!("{value:?}"))
            }
        });
    }
}

/// An access event's one field, its [`Line`]: after a space in text (as the general formatter
/// writes a message), as JSON members with `{:#}`.
struct Message<'a, 'w> {
    w: &'a mut Writer<'w>,
    json: bool,
    /// The first write that failed.
    result: fmt::Result,
}

impl Visit for Message<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() || field.name() != "message" {
            return;
        }
        self.result = if self.json {
            write!(self.w, "{value:#?}")
        } else {
            write!(self.w, " {value:?}")
        };
    }
}

/// Writes `value` as a JSON string, escaped as serde_json escapes it.
fn json_string(w: &mut Writer<'_>, value: fmt::Arguments<'_>) -> fmt::Result {
    w.write_char('"')?;
    JsonEscaped(&mut *w).write_fmt(value)?;
    w.write_char('"')
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use http::StatusCode;

    use super::*;
    use crate::http::forwarding::Forwarding;
    use crate::http::rules::Ids;
    use crate::http::Protocol;

    /// Everything written to a test subscriber.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The requests each format is checked with: escapes, a VPC endpoint, no upstream time,
    /// ids and a balancer, a Host with a port and an IPv6 one.
    fn log_requests(emit: fn(&Answered<'_>, &Ended)) {
        let plain = Forwarding::new("192.0.2.7:40000".parse().unwrap(), Some(443), None, None)
            .with_peer("10.0.1.5:61000".parse().unwrap());
        let vpce = Some("vpce-0123456789abcdef0");
        let via = Forwarding::new("[2001:db8::1]:5".parse().unwrap(), None, None, vpce);
        let ids = crate::http::rules::IdRules {
            request_id: Some(http::HeaderName::from_static("x-request-id")),
            amzn_trace: true,
        }
        .judge(
            [
                ("x-request-id", &b"req-1"[..]),
                (
                    "x-amzn-trace-id",
                    b"Root=1-67891233-abcdef012345678912345678",
                ),
                (
                    "traceparent",
                    b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            ]
            .into_iter(),
        );
        let none = Ids::default();
        let ms = |us| Duration::from_micros(us);
        let line = |from, protocol, method, path, status, upstream: Option<u64>, ids| {
            let a = Answered {
                from,
                protocol,
                method,
                path,
                host: Some("example.com:8443"),
                user_agent: Some("curl/8.5.0"),
                ids,
                status,
                elapsed: ms(upstream.unwrap_or(0)),
                upstream: upstream.is_some(),
            };
            let ended = Ended {
                received: 12,
                sent: 3456,
                total: ms(upstream.unwrap_or(0) + 250),
            };
            emit(&a, &ended);
        };
        line(
            &plain,
            Protocol::Http1,
            "GET",
            "/",
            StatusCode::OK,
            Some(385),
            &ids,
        );
        line(
            &plain,
            Protocol::H2,
            "POST",
            "/a\"b\\c",
            StatusCode::BAD_GATEWAY,
            Some(60_000_001),
            &none,
        );
        line(
            &via,
            Protocol::Http1,
            "GET",
            "/\u{e9}\t\u{1f}\n\u{7f}",
            StatusCode::OK,
            None,
            &none,
        );
        line(
            &via,
            Protocol::H2,
            "CONNECT",
            "/ws",
            StatusCode::OK,
            Some(0),
            &none,
        );
        // Every TLS field, an IPv6 Host and a user agent and subject that need escapes.
        let tls = crate::http::forwarding::TlsFacts {
            sni: Some("api.example.com".into()),
            version: "TLSv1_3",
            cipher: "TLS13_AES_256_GCM_SHA384",
            alpn: Some("h2"),
            client: Some(crate::http::forwarding::ClientCert {
                subject: "CN=caf\u{e9} \"q\"".into(),
                header: http::HeaderValue::from_static("Hash=00"),
            }),
        };
        let secure = plain.clone().with_tls(None, Some(tls));
        emit(
            &Answered {
                from: &secure,
                protocol: Protocol::H2,
                method: "GET",
                path: "/tls",
                host: Some("[2001:db8::2]:443"),
                user_agent: Some("a \"quoted\"\tagent"),
                ids: &none,
                status: StatusCode::NO_CONTENT,
                elapsed: ms(7),
                upstream: true,
            },
            &Ended::default(),
        );
    }

    /// The access event as tracing's own fields, one per name: what the general formatter
    /// writes for it is the convention [`Line`] must match byte for byte.
    fn reference(a: &Answered<'_>, ended: &Ended) {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let upstream_us = a.upstream.then(|| us(a.elapsed));
        let from = a.from;
        let tls = from.tls.as_ref();
        tracing::event!(
            target: TARGET,
            tracing::Level::INFO,
            {
            "client.address" = tracing::field::display(from.client_ip()),
            "client.port" = from.client.port(),
            "network.peer.address" = from.peer_ip.as_deref().map(tracing::field::display),
            "network.protocol.version" = a.protocol.version(),
            "http.request.method" = %a.method,
            "url.path" = a.path,
            "server.address" = a.host.map(crate::telemetry::access_line::host_name),
            "user_agent.original" = a.user_agent,
            "http.response.status_code" = a.status.as_u16(),
            "http.request.body.size" = ended.received,
            "http.response.body.size" = ended.sent,
            duration_us = us(ended.total),
            upstream_us,
            request_id = a.ids.request_id(),
            amzn_trace_id = a.ids.amzn_root(),
            trace_id = a.ids.trace_id(),
            "aws.vpce.id" = from.vpce(),
            "tls.protocol.version" = tls.map(|t| t.version),
            "tls.cipher" = tls.map(|t| t.cipher),
            "tls.server.name" = tls.and_then(|t| t.sni.as_deref()),
            "tls.next_protocol" = tls.and_then(|t| t.alpn),
            "tls.client.subject" = tls.and_then(|t| t.client.as_ref()).map(|c| c.subject.as_str()),
            }
        );
    }

    /// The lines the general formatter writes for [`reference`] events and [`Lines`] for
    /// [`record`], for [`log_requests`], in that order, each without its timestamp.
    fn both(json: bool) -> [Vec<String>; 2] {
        let run = |ours: bool| {
            let out = Captured::default();
            let sink = out.clone();
            let builder = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || sink.clone());
            let subscriber: Box<dyn Subscriber + Send + Sync> = match (json, ours) {
                (false, false) => Box::new(builder.finish()),
                (false, true) => Box::new(
                    builder
                        .map_event_format(|other| Lines { other, json })
                        .finish(),
                ),
                (true, ours) => {
                    let builder = builder.json().flatten_event(true).with_current_span(false);
                    if ours {
                        Box::new(
                            builder
                                .map_event_format(|other| Lines { other, json })
                                .finish(),
                        )
                    } else {
                        Box::new(builder.finish())
                    }
                }
            };
            let emit = if ours { record } else { reference };
            tracing::subscriber::with_default(subscriber, || log_requests(emit));
            let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
            text.lines().map(without_timestamp).collect::<Vec<_>>()
        };
        [run(false), run(true)]
    }

    fn without_timestamp(line: &str) -> String {
        let (before, after) = line.split_once('Z').expect("a timestamp");
        let stamp = before.trim_start_matches("{\"timestamp\":\"");
        assert_eq!(stamp.len(), "2026-11-21T22:52:55.196621".len(), "{line}");
        format!("{}{after}", &before[..before.len() - stamp.len()])
    }

    #[test]
    fn text_lines_are_what_the_general_formatter_writes() {
        let [general, ours] = both(false);
        assert_eq!(general.len(), 5);
        assert_eq!(ours, general);
        assert_eq!(
            ours[0],
            concat!(
                "  INFO access: client.address=192.0.2.7 client.port=40000 ",
                "network.peer.address=10.0.1.5 network.protocol.version=\"1.1\" ",
                "http.request.method=GET url.path=\"/\" server.address=\"example.com\" ",
                "user_agent.original=\"curl/8.5.0\" http.response.status_code=200 ",
                "http.request.body.size=12 http.response.body.size=3456 duration_us=635 ",
                "upstream_us=385 request_id=\"req-1\" ",
                "amzn_trace_id=\"1-67891233-abcdef012345678912345678\" ",
                "trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\""
            )
        );
        assert!(
            ours[1].contains(r#"url.path="/a\"b\\c" server.address"#)
                && ours[1].contains(" duration_us=60000251 upstream_us=60000001"),
            "{}",
            ours[1]
        );
        assert!(
            ours[2].ends_with(" duration_us=250 aws.vpce.id=\"vpce-0123456789abcdef0\""),
            "{}",
            ours[2]
        );
        assert!(
            ours[4].contains(concat!(
                r#"server.address="2001:db8::2" user_agent.original="a \"quoted\"\tagent""#,
                r#" http.response.status_code=204"#
            )) && ours[4].ends_with(concat!(
                r#" tls.protocol.version="TLSv1_3" tls.cipher="TLS13_AES_256_GCM_SHA384""#,
                r#" tls.server.name="api.example.com" tls.next_protocol="h2""#,
                r#" tls.client.subject="CN=café \"q\"""#
            )),
            "{}",
            ours[4]
        );
    }

    #[test]
    fn json_lines_are_what_the_general_formatter_writes() {
        let [general, ours] = both(true);
        assert_eq!(general.len(), 5);
        assert_eq!(ours, general);
        let line: serde_json::Value = serde_json::from_str(&ours[2]).unwrap();
        assert_eq!(line["url.path"], "/\u{e9}\t\u{1f}\n\u{7f}");
        assert_eq!(line["client.address"], "2001:db8::1");
        assert_eq!(line["client.port"], 5);
        assert_eq!(line["aws.vpce.id"], "vpce-0123456789abcdef0");
        assert_eq!(line["http.response.status_code"], 200);
        assert_eq!(line["http.response.body.size"], 3456);
        assert!(line.get("upstream_us").is_none(), "{line}");
        assert!(line.get("network.peer.address").is_none(), "{line}");
        // No bare `status`, which log pipelines read as the level.
        assert!(line.get("status").is_none(), "{line}");
        assert_eq!(line["target"], "access");
        let first: serde_json::Value = serde_json::from_str(&ours[0]).unwrap();
        assert_eq!(first["request_id"], "req-1");
        assert_eq!(first["server.address"], "example.com");
    }

    #[test]
    fn other_events_go_to_the_general_formatter() {
        let out = Captured::default();
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .map_event_format(|other| Lines { other, json: false })
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(client = "192.0.2.1:1", "closing");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.ends_with(concat!(
                "  WARN ",
                module_path!(),
                ": closing client=\"192.0.2.1:1\"\n"
            )),
            "{text}"
        );
    }
}
