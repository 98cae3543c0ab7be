//! Finding where a chunked body ends (RFC 9112 §7.1) while its bytes pass through unchanged:
//! for the app's responses on the lean path and for clients' requests at the head gate.
//!
//! Chunk-size lines are read with `httparse::parse_chunk_size`, with two checks it leaves out:
//! the line starts with a hex digit and holds no bare LF. Trailer lines must be header fields.

/// Longest chunk-size line (with extensions) accepted.
const MAX_SIZE_LINE: usize = 4096;
/// Longest trailer section accepted.
const MAX_TRAILERS: usize = 64 * 1024;

/// Where a chunked body's framing is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunked {
    /// At the start of a chunk-size line.
    #[default]
    Size,
    /// Inside chunk data, with this many bytes left.
    Data(u64),
    /// After chunk data, where CRLF must follow.
    DataEnd,
    /// In the trailer section, `seen` of its bytes (from the last-chunk line on) checked. The
    /// section is settled only once whole, so a bad trailer never lets a last chunk through
    /// that would make a cut body look complete.
    Trailers(usize),
    /// The body has ended.
    Done,
}

impl Chunked {
    /// Scans `bytes`, which start where the previous call stopped. Returns how many of them
    /// are settled body bytes and whether the body ended there. Bytes past the settled ones
    /// that were not taken are the start of a line not yet whole: pass them again, with more.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<(usize, bool), Malformed> {
        self.scan(bytes, false, &mut |_| {})
    }

    /// Decodes instead of passing through, for a client that frames bodies itself (HTTP/2):
    /// `(skip, data, done)` says the first `skip` bytes are framing, the `data` bytes after
    /// them are body, and whether the body ended. Call again with what follows. Each trailer
    /// field line (checked, without its CRLF) is handed to `trailer`.
    pub(crate) fn decode(
        &mut self,
        bytes: &[u8],
        trailer: &mut dyn FnMut(&[u8]),
    ) -> Result<(usize, usize, bool), &'static str> {
        let (skip, done) = self.scan(bytes, true, trailer).map_err(|m| m.why)?;
        if let Chunked::Data(left) = *self {
            let data = left.min((bytes.len() - skip) as u64);
            *self = if data == left {
                Chunked::DataEnd
            } else {
                Chunked::Data(left - data)
            };
            return Ok((skip, data as usize, false));
        }
        Ok((skip, 0, done))
    }

    /// Reads framing and, unless `stop_at_data`, chunk data too.
    fn scan(
        &mut self,
        bytes: &[u8],
        stop_at_data: bool,
        trailer: &mut dyn FnMut(&[u8]),
    ) -> Result<(usize, bool), Malformed> {
        let mut i = 0;
        match self.scan_from(bytes, &mut i, stop_at_data, trailer) {
            Ok(done) => Ok((i, done)),
            Err(why) => Err(Malformed { settled: i, why }),
        }
    }

    /// [`Chunked::scan`]: whether the body ended, with the settled bytes counted in `i`, which
    /// on an error are the good ones before the fault.
    fn scan_from(
        &mut self,
        bytes: &[u8],
        i: &mut usize,
        stop_at_data: bool,
        trailer: &mut dyn FnMut(&[u8]),
    ) -> Result<bool, &'static str> {
        loop {
            let rest = &bytes[*i..];
            match *self {
                Chunked::Done => return Ok(true),
                Chunked::Data(_) if stop_at_data => return Ok(false),
                Chunked::Data(left) => {
                    let take = left.min(rest.len() as u64);
                    *i += take as usize;
                    if take < left {
                        *self = Chunked::Data(left - take);
                        return Ok(false);
                    }
                    *self = Chunked::DataEnd;
                }
                Chunked::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        *i += 2;
                        *self = Chunked::Size;
                    }
                    [] | [b'\r'] => return Ok(false),
                    _ => return Err("CRLF expected after chunk data"),
                },
                Chunked::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((n, size))) => {
                        let line = &rest[..n - 2];
                        if !line.first().is_some_and(u8::is_ascii_hexdigit) {
                            return Err("missing chunk size");
                        }
                        if line.contains(&b'\n') {
                            return Err("bare LF in a chunk-size line");
                        }
                        // The last-chunk line is settled with the trailer section after it.
                        *self = if size == 0 {
                            Chunked::Trailers(n)
                        } else {
                            *i += n;
                            Chunked::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if rest.len() <= MAX_SIZE_LINE => {
                        if rest.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
                            return Err("missing chunk size");
                        }
                        return Ok(false);
                    }
                    Ok(httparse::Status::Partial) => return Err("chunk-size line too long"),
                    Err(_) => return Err("invalid chunk size"),
                },
                Chunked::Trailers(seen) => {
                    let unchecked = &rest[seen..];
                    let Some(end) = unchecked.windows(2).position(|w| w == b"\r\n") else {
                        if seen + unchecked.len() > MAX_TRAILERS {
                            return Err("trailer section too large");
                        }
                        if unchecked.contains(&b'\n') || unchecked.windows(2).any(|w| w[0] == b'\r')
                        {
                            return Err("bare CR or LF in a trailer");
                        }
                        return Ok(false);
                    };
                    let line = &unchecked[..end];
                    let seen = seen + end + 2;
                    if line.is_empty() {
                        *i += seen;
                        *self = Chunked::Done;
                        continue;
                    }
                    if seen > MAX_TRAILERS {
                        return Err("trailer section too large");
                    }
                    if !is_header_field(line) {
                        return Err("malformed trailer field");
                    }
                    trailer(line);
                    *self = Chunked::Trailers(seen);
                }
            }
        }
    }
}

/// A chunked body that breaks its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed {
    /// How many of the bytes passed in were good body bytes before the fault.
    pub(crate) settled: usize,
    /// What is wrong.
    pub(crate) why: &'static str,
}

/// Whether `line` (without its CRLF) is one `name: value` header field.
fn is_header_field(line: &[u8]) -> bool {
    if line.contains(&b'\n') || line.contains(&b'\r') {
        return false;
    }
    let mut field = Vec::with_capacity(line.len() + 4);
    field.extend_from_slice(line);
    field.extend_from_slice(b"\r\n\r\n");
    let mut one = [httparse::EMPTY_HEADER; 1];
    matches!(
        httparse::parse_headers(&field, &mut one),
        Ok(httparse::Status::Complete(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in pieces of `step` bytes, keeping unsettled bytes as a caller does.
    pub(crate) fn scan(body: &[u8], step: usize) -> Result<(usize, bool), &'static str> {
        let mut state = Chunked::default();
        let (mut settled, mut pending) = (0, Vec::new());
        for piece in body.chunks(step) {
            pending.extend_from_slice(piece);
            let (n, done) = state.feed(&pending).map_err(|m| m.why)?;
            settled += n;
            pending.drain(..n);
            if done {
                return Ok((settled, true));
            }
        }
        Ok((settled, false))
    }

    #[test]
    fn chunked_bodies_end_where_their_framing_says_in_any_split() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Sum: 1\r\n\r\n";
        for step in 1..=body.len() {
            assert_eq!(scan(body, step), Ok((body.len(), true)), "step {step}");
        }
        let mut next = body.to_vec();
        next.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(scan(&next, next.len()), Ok((body.len(), true)));
        assert_eq!(scan(b"0\r\n\r\n", 1), Ok((5, true)));
        assert_eq!(scan(b"A\r\n0123456789\r\n", 3), Ok((15, false)));
        // The last chunk and its trailers are settled together, once the section is whole.
        for step in 1..=18 {
            assert_eq!(scan(b"3\r\nabc\r\n0\r\nX: 1\r\n", step), Ok((8, false)));
        }
    }

    #[test]
    fn a_fault_reports_the_good_bytes_before_it() {
        for (bad, settled) in [
            (&b"3\r\nabc\r\n5 zz\r\nhello\r\n"[..], 8),
            (b"3\r\nabc\r\n0\r\nX: 1\r\nnot a field\r\n\r\n", 8),
            (b"3\r\nabcX", 6),
        ] {
            let bad = Chunked::default().feed(bad).unwrap_err();
            assert_eq!(bad.settled, settled, "{}", bad.why);
        }
    }

    /// Decodes `body` fed in pieces of `step` bytes: the data, and whether it ended.
    fn decode(body: &[u8], step: usize) -> Result<(Vec<u8>, bool), &'static str> {
        decode_all(body, step).map(|(data, _, done)| (data, done))
    }

    /// As [`decode`], with the trailer lines.
    fn decode_all(body: &[u8], step: usize) -> Result<(Vec<u8>, Vec<String>, bool), &'static str> {
        let mut state = Chunked::default();
        let (mut data, mut pending, mut trailers) = (Vec::new(), Vec::new(), Vec::new());
        let mut done = false;
        for piece in body.chunks(step) {
            pending.extend_from_slice(piece);
            while !done {
                let mut keep =
                    |line: &[u8]| trailers.push(String::from_utf8_lossy(line).into_owned());
                let (skip, n, ended) = state.decode(&pending, &mut keep)?;
                data.extend_from_slice(&pending[skip..skip + n]);
                pending.drain(..skip + n);
                done = ended;
                if skip + n == 0 {
                    break;
                }
            }
        }
        Ok((data, trailers, done))
    }

    #[test]
    fn decoding_yields_the_chunk_data_alone_in_any_split() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Sum: 1\r\n\r\n";
        for step in 1..=body.len() {
            let want = b"helloabcdefghijklmnopqrstuvwxyz".to_vec();
            assert_eq!(decode(body, step), Ok((want, true)), "step {step}");
        }
        assert_eq!(decode(b"A\r\n01234", 3), Ok((b"01234".to_vec(), false)));
        assert!(decode(b"5\r\nhelloX\r\n", 4).is_err());
    }

    #[test]
    fn decoding_hands_over_each_trailer_line_once_in_any_split() {
        let body = b"2\r\nhi\r\n0\r\nX-Sum: 1\r\nGrpc-Status:0\r\n\r\n";
        for step in 1..=body.len() {
            let (data, trailers, done) = decode_all(body, step).unwrap();
            assert_eq!((data.as_slice(), done), (&b"hi"[..], true), "step {step}");
            assert_eq!(trailers, ["X-Sum: 1", "Grpc-Status:0"], "step {step}");
        }
    }

    #[test]
    fn malformed_chunked_framing_is_refused_in_any_split() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"\r\n",
            b"11111111111111111\r\n",
            b"5 junk\r\nhello\r\n",
            b"5;ext\nmore\r\nhello\r\n",
            b"0\r\nbad\ntrailer\r\n\r\n",
            b"0\r\nnot a header\r\n\r\n",
            b"0\r\n: no name\r\n\r\n",
            b"0\r\n\r\r",
        ] {
            for step in [1, 3, bad.len()] {
                assert!(
                    scan(bad, step).is_err(),
                    "{:?} step {step}",
                    String::from_utf8_lossy(bad)
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_chunked_body_is_found_whole_in_any_split(
            sizes in proptest::collection::vec(0usize..300, 0..8),
            step in 1usize..64,
        ) {
            let mut body = Vec::new();
            for (i, n) in sizes.iter().filter(|&&n| n > 0).enumerate() {
                body.extend_from_slice(format!("{n:x}{}\r\n", if i % 2 == 0 { "" } else { ";x=y" }).as_bytes());
                body.extend(std::iter::repeat_n(b'a', *n));
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\nT: 1\r\n\r\n");
            let whole = body.len();
            body.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            proptest::prop_assert_eq!(scan(&body, step), Ok((whole, true)));
        }

        #[test]
        fn the_scanner_never_panics_or_overruns(input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            if let Ok((n, _)) = Chunked::default().feed(&input) {
                proptest::prop_assert!(n <= input.len());
            }
        }
    }
}
