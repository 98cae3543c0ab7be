//! Request ids and trace context, judged once per request on every path: which of the
//! client's are kept, which are made, which headers carry them to the app, and the one the
//! client gets back.
//!
//! - The request id (`REQUEST_ID_HEADER`): the client's when it is one printable value of at
//!   most [`MAX_REQUEST_ID`] bytes, otherwise 128 random bits in hex. The app and the client
//!   both get it.
//! - `X-Amzn-Trace-Id` (`AMZN_TRACE_ID`): kept when it carries a valid `Root`, otherwise made
//!   as an ALB makes it, `Root=1-<epoch seconds, 8 hex>-<96 random bits, 24 hex>`.
//! - W3C `traceparent`: passed unchanged when valid; removed with its `tracestate` when not.

use http::{HeaderName, HeaderValue};
use rand::Rng;

/// The longest client request id kept; a longer one is replaced.
pub(crate) const MAX_REQUEST_ID: usize = 128;

/// The longest `X-Amzn-Trace-Id` kept (a root, a parent, a sampling flag and some room).
const MAX_AMZN_TRACE: usize = 256;

static AMZN_TRACE: HeaderName = HeaderName::from_static("x-amzn-trace-id");

/// What the settings say about ids.
#[derive(Debug, Clone)]
pub(crate) struct IdRules {
    /// `REQUEST_ID_HEADER`; `None` is off.
    pub(crate) request_id: Option<HeaderName>,
    /// `AMZN_TRACE_ID`.
    pub(crate) amzn_trace: bool,
}

/// What one request's trace context came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ids {
    /// The request id header and the value both the app and the client get.
    request: Option<(HeaderName, HeaderValue)>,
    /// The `X-Amzn-Trace-Id` the app gets, and where its root starts in it.
    amzn: Option<(HeaderValue, usize)>,
    /// The `traceparent` the client sent.
    traceparent: TraceParent,
}

/// A client's `traceparent`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum TraceParent {
    #[default]
    Absent,
    /// Valid, with its trace id (32 lower-case hex digits); it passes unchanged.
    Valid([u8; 32]),
    /// Malformed, or sent twice: it and `tracestate` are removed.
    Invalid,
}

/// Which of the id headers one header name is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    RequestId,
    Amzn,
    TraceParent,
    TraceState,
}

impl IdRules {
    /// No ids at all: for tests of other rules.
    #[cfg(test)]
    pub(crate) fn off() -> Self {
        IdRules {
            request_id: None,
            amzn_trace: false,
        }
    }

    /// Judges a request's headers: keeps the client's valid ids and makes the missing ones.
    /// An id header sent twice is not valid: the app could read either.
    pub(crate) fn judge<'h>(&self, fields: impl Iterator<Item = (&'h str, &'h [u8])>) -> Ids {
        let (mut request, mut amzn) = (Given::None, Given::None);
        let mut traceparent = TraceParent::Absent;
        for (name, value) in fields {
            match which(self.request_id.as_ref(), self.amzn_trace, name) {
                Some(Seen::RequestId) => request.see(value, valid_request_id),
                Some(Seen::Amzn) => amzn.see(value, |v| root_at(v).is_some()),
                Some(Seen::TraceParent) => {
                    traceparent = match (traceparent, trace_id(value)) {
                        (TraceParent::Absent, Some(id)) => TraceParent::Valid(id),
                        _ => TraceParent::Invalid,
                    }
                }
                Some(Seen::TraceState) | None => {}
            }
        }
        let mut rng = rand::rng();
        let request = (self.request_id.clone()).map(|name| {
            (
                name,
                request.kept().unwrap_or_else(|| new_request_id(&mut rng)),
            )
        });
        let amzn = self.amzn_trace.then(|| match amzn.kept() {
            Some(v) => {
                let at = root_at(v.as_bytes()).unwrap_or(0);
                (v, at)
            }
            None => (new_amzn_trace(&mut rng), "Root=".len()),
        });
        Ids {
            request,
            amzn,
            traceparent,
        }
    }

    /// Ids for a request whose head could not be read: all made here.
    pub(crate) fn fresh(&self) -> Ids {
        self.judge(std::iter::empty())
    }
}

impl Ids {
    /// Whether a client's request header reaches the app as it is: the request id and
    /// `X-Amzn-Trace-Id` are written by the proxy (a kept value once), and an invalid
    /// `traceparent` goes with its `tracestate`.
    pub(crate) fn forwards(&self, name: &str) -> bool {
        match which(self.request_name(), self.amzn.is_some(), name) {
            Some(Seen::RequestId | Seen::Amzn) => false,
            Some(Seen::TraceParent | Seen::TraceState) => self.traceparent != TraceParent::Invalid,
            None => true,
        }
    }

    /// Whether an app's response header reaches the client: not the request id, which the
    /// proxy sets to the request's own.
    pub(crate) fn forwards_response(&self, name: &str) -> bool {
        which(self.request_name(), false, name) != Some(Seen::RequestId)
    }

    fn request_name(&self) -> Option<&HeaderName> {
        self.request.as_ref().map(|(n, _)| n)
    }

    /// The id headers the proxy writes to the app.
    pub(crate) fn to_app(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        let request = self.request.as_ref().map(|(n, v)| (n, v));
        let amzn = self.amzn.as_ref().map(|(v, _)| (&AMZN_TRACE, v));
        request.into_iter().chain(amzn)
    }

    /// The request id header the client gets on the response, whoever wrote it.
    pub(crate) fn to_client(&self) -> Option<(&HeaderName, &HeaderValue)> {
        self.request.as_ref().map(|(n, v)| (n, v))
    }

    /// Sets the request id on a response built as a header map (hyper's HTTP/1.1 and HTTP/2),
    /// replacing any the app sent.
    pub(crate) fn stamp(&self, headers: &mut http::HeaderMap) {
        if let Some((name, value)) = &self.request {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// The request id, for the access line.
    pub(crate) fn request_id(&self) -> Option<&str> {
        self.request.as_ref().and_then(|(_, v)| v.to_str().ok())
    }

    /// The `Root` of `X-Amzn-Trace-Id`, for the access line.
    pub(crate) fn amzn_root(&self) -> Option<&str> {
        let (value, at) = self.amzn.as_ref()?;
        let root = value.as_bytes().get(*at..*at + ROOT_LEN)?;
        std::str::from_utf8(root).ok()
    }

    /// The `traceparent`'s trace id, for the access line.
    pub(crate) fn trace_id(&self) -> Option<&str> {
        match &self.traceparent {
            TraceParent::Valid(id) => std::str::from_utf8(id).ok(),
            _ => None,
        }
    }
}

/// Which id header `name` is, when the request id is `request_id` and `X-Amzn-Trace-Id` is
/// `amzn` on.
fn which(request_id: Option<&HeaderName>, amzn: bool, name: &str) -> Option<Seen> {
    let is = |other: &str| name.len() == other.len() && name.eq_ignore_ascii_case(other);
    if request_id.is_some_and(|h| is(h.as_str())) {
        Some(Seen::RequestId)
    } else if amzn && is(AMZN_TRACE.as_str()) {
        Some(Seen::Amzn)
    } else if is("traceparent") {
        Some(Seen::TraceParent)
    } else if is("tracestate") {
        Some(Seen::TraceState)
    } else {
        None
    }
}

/// A header the client may send once.
enum Given<'h> {
    None,
    Valid(&'h [u8]),
    Invalid,
}

impl<'h> Given<'h> {
    fn see(&mut self, value: &'h [u8], valid: impl Fn(&[u8]) -> bool) {
        *self = match self {
            Given::None if valid(value) => Given::Valid(value),
            _ => Given::Invalid,
        };
    }

    fn kept(&self) -> Option<HeaderValue> {
        match self {
            Given::Valid(v) => HeaderValue::from_bytes(v).ok(),
            _ => None,
        }
    }
}

/// One to [`MAX_REQUEST_ID`] printable ASCII characters.
fn valid_request_id(v: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&v.len()) && v.iter().all(|b| (b' '..=b'~').contains(b))
}

/// The length of a root, `1-xxxxxxxx-xxxxxxxxxxxxxxxxxxxxxxxx`.
const ROOT_LEN: usize = 35;

/// Where the `Root=1-xxxxxxxx-xxxxxxxxxxxxxxxxxxxxxxxx` field's value starts in an
/// `X-Amzn-Trace-Id`, whose fields are `;`-separated `Key=Value` pairs of printable characters.
fn root_at(v: &[u8]) -> Option<usize> {
    if v.len() > MAX_AMZN_TRACE || !v.iter().all(|b| (b'!'..=b'~').contains(b)) {
        return None;
    }
    let mut at = 0;
    for field in v.split(|&b| b == b';') {
        if let Some(root) = field.strip_prefix(b"Root=") {
            let ok = root.len() == ROOT_LEN
                && root.starts_with(b"1-")
                && root[10] == b'-'
                && root[2..10]
                    .iter()
                    .chain(&root[11..])
                    .all(u8::is_ascii_hexdigit);
            return ok.then_some(at + "Root=".len());
        }
        at += field.len() + 1;
    }
    None
}

/// The trace id of a valid `traceparent` (W3C Trace Context §3.2): `version-traceid-parentid-flags`
/// in lower-case hex, neither id all zeros, version `ff` invalid; version `00` exactly so, a later
/// version possibly followed by `-` and more.
fn trace_id(v: &[u8]) -> Option<[u8; 32]> {
    let hex = |s: &[u8]| {
        s.iter()
            .all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let zeros = |s: &[u8]| s.iter().all(|&b| b == b'0');
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let (version, id, parent, flags) = (&v[..2], &v[3..35], &v[36..52], &v[53..55]);
    let fits = match version {
        b"00" => v.len() == 55,
        _ => v.len() == 55 || v[55] == b'-',
    };
    let ok = fits
        && version != b"ff"
        && [version, id, parent, flags].into_iter().all(hex)
        && !zeros(id)
        && !zeros(parent);
    ok.then(|| id.try_into().expect("32 bytes"))
}

/// Writes `bits`' low `N / 2` bytes as `N` lower-case hex digits.
fn hex<const N: usize>(mut bits: u128) -> [u8; N] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0; N];
    for d in out.iter_mut().rev() {
        *d = DIGITS[(bits & 0xf) as usize];
        bits >>= 4;
    }
    out
}

/// 128 random bits as 32 hex digits.
fn new_request_id(rng: &mut impl Rng) -> HeaderValue {
    let digits: [u8; 32] = hex(rng.random());
    HeaderValue::from_bytes(&digits).expect("hex digits")
}

/// `Root=1-<epoch seconds>-<96 random bits>`, as an ALB makes it.
fn new_amzn_trace(rng: &mut impl Rng) -> HeaderValue {
    let now = epoch_seconds();
    let mut value = *b"Root=1-xxxxxxxx-xxxxxxxxxxxxxxxxxxxxxxxx";
    value[7..15].copy_from_slice(&hex::<8>(u128::from(now as u32)));
    value[16..].copy_from_slice(&hex::<24>(rng.random()));
    HeaderValue::from_bytes(&value).expect("hex digits")
}

/// The Unix time in whole seconds from the kernel's coarse clock, which is a few milliseconds
/// behind at most and much cheaper to read than the precise one (`bench/NOTES.md`).
fn epoch_seconds() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill; the clock id is a constant.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
        return u64::try_from(ts.tv_sec).unwrap_or(0);
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
