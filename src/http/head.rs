//! The one writer of HTTP/1.1 heads, used for requests to the app and for responses to the
//! client alike: the start line, `name: value` fields, the proxy's `Date`, the blank line.

use http::StatusCode;

use crate::http::date;

/// Writes one HTTP/1.1 head into a buffer it clears first; the head is complete after [`HeadWriter::end`].
pub(crate) struct HeadWriter<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> HeadWriter<'a> {
    /// A request head: `METHOD target HTTP/1.1`.
    pub(crate) fn request(out: &'a mut Vec<u8>, method: &str, target: &str) -> Self {
        out.clear();
        for part in [method, " ", target, " HTTP/1.1\r\n"] {
            out.extend_from_slice(part.as_bytes());
        }
        HeadWriter { out }
    }

    /// A response head: `HTTP/1.1 status reason`, the app's reason phrase when it sent a
    /// non-empty one, the standard one otherwise (the proxy speaks its own version).
    pub(crate) fn response(out: &'a mut Vec<u8>, status: StatusCode, reason: Option<&str>) -> Self {
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        let reason = reason
            .filter(|r| !r.is_empty())
            .or(status.canonical_reason())
            .unwrap_or("");
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        HeadWriter { out }
    }

    /// Appends one `name: value` line.
    pub(crate) fn field(&mut self, name: &[u8], value: &[u8]) {
        self.out.extend_from_slice(name);
        self.out.extend_from_slice(b": ");
        self.out.extend_from_slice(value);
        self.out.extend_from_slice(b"\r\n");
    }

    /// Appends the proxy's `Date` (RFC 9110 6.6.1).
    pub(crate) fn date(&mut self) {
        date::with_now(|now| self.field(b"date", now));
    }

    /// Appends `content-length`.
    pub(crate) fn content_length(&mut self, n: u64) {
        self.field(b"content-length", itoa::Buffer::new().format(n).as_bytes());
    }

    /// Ends the head with its blank line.
    pub(crate) fn end(self) {
        self.out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_head_is_its_line_fields_and_blank_line() {
        let mut out = b"stale".to_vec();
        let mut head = HeadWriter::request(&mut out, "GET", "/a?b");
        head.field(b"host", b"x");
        head.content_length(0);
        head.end();
        assert_eq!(
            out,
            b"GET /a?b HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[test]
    fn a_response_keeps_the_apps_reason_or_gets_the_standard_one() {
        let mut out = Vec::new();
        HeadWriter::response(&mut out, StatusCode::OK, Some("Fine")).end();
        assert_eq!(out, b"HTTP/1.1 200 Fine\r\n\r\n");
        HeadWriter::response(&mut out, StatusCode::NOT_FOUND, Some("")).end();
        assert_eq!(out, b"HTTP/1.1 404 Not Found\r\n\r\n");
        HeadWriter::response(&mut out, StatusCode::from_u16(599).unwrap(), None).end();
        assert_eq!(out, b"HTTP/1.1 599 \r\n\r\n");
    }
}
