//! The proxy started in-process on port 0, and the configuration every test starts from.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use elb_ws_proxy::{Config, Proxy};

use super::*;

/// A proxy running in-process, with a handle to shut it down.
pub struct Running {
    pub plain: SocketAddr,
    pub tls: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub proxy_metrics: Arc<elb_ws_proxy::metrics::Metrics>,
    signals: mpsc::UnboundedSender<()>,
    pub task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// One series of the running proxy's metrics.
    pub fn metric(&self, series: &str) -> f64 {
        metric(&self.proxy_metrics.render(), series)
    }

    /// Sends the shutdown signal (as SIGTERM would); a second call is a second SIGTERM.
    pub fn signal(&mut self) {
        let _ = self.signals.send(());
    }

    /// Signals and waits for `serve` to return.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.signal();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(40), task)
            .await
            .expect("proxy did not stop")
            .unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The configuration every test starts from: listeners on port 0, pointing at `app`.
pub fn config_for(app: SocketAddr) -> Config {
    let mut c = Config::new(0, 0, &app.ip().to_string(), app.port());
    c.listen_address = "127.0.0.1".parse().unwrap();
    c
}

pub async fn start_proxy(config: Config) -> Running {
    start_proxy_with_resolver(config, elb_ws_proxy::system_resolver()).await
}

/// As [`start_proxy`], looking the app's name up with `resolver`.
pub async fn start_proxy_with_resolver(
    config: Config,
    resolver: elb_ws_proxy::Resolver,
) -> Running {
    let proxy = Proxy::bind_with_resolver(config, resolver)
        .await
        .expect("proxy binds");
    let (plain, tls, metrics) = (proxy.plain_addr(), proxy.tls_addr(), proxy.metrics_addr());
    let proxy_metrics = proxy.metrics();
    let (signals, received) = mpsc::unbounded_channel::<()>();
    let shutdown = futures_util::stream::unfold(received, |mut received| async move {
        received.recv().await.map(|()| ((), received))
    });
    let task = tokio::spawn(proxy.serve(Box::pin(shutdown)));
    Running {
        plain,
        tls,
        metrics,
        proxy_metrics,
        signals,
        task: Some(task),
    }
}
