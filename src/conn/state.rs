//! What one client connection knows about itself, shared by its task, its socket wrapper and
//! its requests: the forwarding facts, the request and keep-alive clocks, byte counts, the
//! rules the head gate decided for hyper, a pending upgrade, and the upstream link in use.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper::upgrade::OnUpgrade;

use crate::config::Port;
use crate::http::body::Body;
use crate::http::clocks::Phase;
use crate::http::forwarding::Forwarding;
use crate::http::rules::{Ids, RequestRules};
use crate::telemetry::request::Pending;
use crate::upstream::Driver;

/// Two upgrades waiting to be joined once hyper has handed both sockets back.
pub(crate) struct PendingUpgrade {
    pub(crate) client: OnUpgrade,
    pub(crate) upstream: OnUpgrade,
}

/// The state of one client connection.
pub(crate) struct ConnCtx {
    /// Where requests on this connection come from, as the app is told.
    pub(crate) forwarding: Forwarding,
    /// The listener it arrived on.
    pub(crate) port: Port,
    /// It came without a PROXY header: only `/ping` is answered.
    pub(crate) health_only: bool,
    /// Requests being answered now.
    in_flight: AtomicU32,
    /// Milliseconds on [`clock`] since the last response ended.
    idle_since: AtomicU64,
    /// Milliseconds on [`clock`] when a request head began arriving; 0 while none is.
    head_started: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    /// Both halves of an accepted upgrade, joined once hyper lets go of the client socket.
    upgrade: Mutex<Option<PendingUpgrade>>,
    /// The rules the head gate decided, one per head given to hyper, in order (`None` for
    /// `/ping`), with the head's ids.
    rules: Mutex<VecDeque<(Option<RequestRules>, Ids)>>,
    /// The upstream connection this client connection is using; polled by its task.
    pub(crate) upstream: Driver,
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the process's first call, never 0 (0 means "unset" above).
fn clock() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The instant a [`clock`] reading stands for.
fn at(ms: u64) -> tokio::time::Instant {
    tokio::time::Instant::from_std(*EPOCH.get_or_init(Instant::now) + Duration::from_millis(ms))
}

impl ConnCtx {
    pub(crate) fn new(forwarding: Forwarding, port: Port, health_only: bool) -> Self {
        ConnCtx {
            forwarding,
            port,
            health_only,
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(clock()),
            head_started: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            upgrade: Mutex::new(None),
            rules: Mutex::new(VecDeque::new()),
            upstream: Driver::default(),
        }
    }

    /// Bytes arrived from the client: a request head may be starting.
    pub(crate) fn on_bytes_read(&self, n: usize) {
        self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started.store(clock(), Ordering::Relaxed);
        }
    }

    /// Whether a request is being answered.
    pub(crate) fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
    }

    /// The end of a request: its response body is done or dropped ([`Tracked`], or an HTTP/2
    /// stream's body).
    pub(crate) fn request_finished(&self) {
        self.idle_since.store(clock(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Where the connection stands, for its [`Clocks`](crate::http::clocks::Clocks).
    pub(crate) fn phase(&self) -> Phase {
        if self.busy() {
            return Phase::Busy;
        }
        match self.head_started.load(Ordering::Relaxed) {
            0 => Phase::Idle {
                since: at(self.idle_since.load(Ordering::Relaxed)),
            },
            head => Phase::Head { started: at(head) },
        }
    }

    /// Called by the upgrade path once the app has answered `101`.
    pub(crate) fn set_upgrade(&self, pending: PendingUpgrade) {
        if let Ok(mut slot) = self.upgrade.lock() {
            *slot = Some(pending);
        }
    }

    pub(crate) fn take_upgrade(&self) -> Option<PendingUpgrade> {
        self.upgrade.lock().ok()?.take()
    }

    /// The gate passed a head to hyper with these rules (`None` for a `/ping`, which no rules
    /// judge) and ids.
    pub(crate) fn push_rules(&self, rules: Option<RequestRules>, ids: Ids) {
        if let Ok(mut q) = self.rules.lock() {
            q.push_back((rules, ids));
        }
    }

    /// The rules (`None` for a `/ping`) and ids of the request hyper is handing to the
    /// service now.
    pub(crate) fn next_rules(&self) -> (Option<RequestRules>, Ids) {
        let next = self.rules.lock().ok().and_then(|mut q| q.pop_front());
        next.unwrap_or_default()
    }
}

/// A response body that tells the connection when the response is done (sent or dropped),
/// which is when the keep-alive clock starts and the access line is written.
pub(crate) struct Tracked {
    pub(crate) inner: Body,
    pub(crate) ctx: Arc<ConnCtx>,
    /// The request's access line, counting the body as it goes.
    pub(crate) pending: Option<Pending>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(pending) = &self.pending {
            pending.finish(&self.ctx.forwarding);
        }
        self.ctx.request_finished();
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(f))), Some(pending)) = (&frame, &mut this.pending) {
            pending.sent(f.data_ref().map_or(0, Bytes::len));
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
