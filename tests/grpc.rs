//! gRPC end to end with peers no one here wrote: Python grpcio as the client and as the app,
//! the proxy between them with `DESTINATION_PROTOCOL=h2c`, and the NLB stand-in writing the
//! PROXY v2 header in front. Unary, server streaming, bidirectional streaming and an error
//! status with details (trailers) all pass, and the app sees the client's address. A second
//! test runs the same calls over a secure channel that the proxy's own TLS ends (ALPN `h2`),
//! as behind an NLB TCP listener.
//!
//! Needs `/usr/bin/python3` with `grpc` (Debian's `python3-grpcio`), so `cargo test` lists it
//! as ignored; `.ci/run` installs it and runs it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use elb_ws_proxy::config::{Config, DestinationProtocol, TlsMode};

use common::tls::Ca;
use common::*;

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc/peer.py");
const PYTHON: &str = "/usr/bin/python3";

/// The grpcio server, stopped when dropped (its stdin closes).
struct GrpcApp(std::process::Child);

impl Drop for GrpcApp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the grpcio server; returns it and a proxy configuration (h2c) that points at it.
async fn grpc_app() -> (GrpcApp, Config) {
    let mut server = Command::new(PYTHON)
        .args([PEER, "server"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 must be installed");
    let stdout = server.stdout.take().unwrap();
    let app = GrpcApp(server);
    let port_line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    });
    let port_line = within("grpc server up", port_line).await.unwrap();
    let port: u16 = port_line
        .strip_prefix("PORT ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!("the grpc server said {port_line:?} (is python3-grpcio installed?)")
        });
    let mut config = config_for(format!("127.0.0.1:{port}").parse().unwrap());
    config.destination_protocol = DestinationProtocol::H2c;
    (app, config)
}

/// Runs the grpcio client through `proxy` behind the NLB stand-in (client 198.51.100.77), with
/// `extra` arguments (a CA file and a name for a secure channel), and checks every call.
async fn run_client_through(proxy: &Running, extra: Vec<String>) {
    let nlb = common::nlb::forwarder(proxy.tls, "198.51.100.77:40000").await;
    let out = tokio::task::spawn_blocking(move || {
        Command::new(PYTHON)
            .args([PEER, "client", &nlb.to_string()])
            .args(extra)
            .output()
            .unwrap()
    });
    let out = within("grpc client", out).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result["unary"], "unary:hello from 198.51.100.77");
    assert_eq!(
        result["server_stream"],
        serde_json::json!(["item 0", "item 1", "item 2"])
    );
    assert_eq!(
        result["bidi"],
        serde_json::json!(["echo:a", "echo:b", "echo:c"])
    );
    assert_eq!(result["fail"]["code"], "INVALID_ARGUMENT");
    assert_eq!(result["fail"]["details"], "bad thing");
    assert_eq!(
        result["fail"]["status_details"],
        "08031209626164207468696e67"
    );
    let m = proxy.proxy_metrics.render();
    assert!(
        m.contains("elb_ws_proxy_requests_total{protocol=\"h2\",class=\"2xx\"} 4\n"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs /usr/bin/python3 with grpcio (python3-grpcio); .ci/run installs it and runs it with --ignored"]
async fn grpcio_client_and_server_through_the_proxy() {
    let (app, config) = grpc_app().await;
    let proxy = start_proxy(config).await;
    run_client_through(&proxy, Vec::new()).await;
    drop(app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs /usr/bin/python3 with grpcio (python3-grpcio); .ci/run installs it and runs it with --ignored"]
async fn grpcio_secure_channel_through_the_proxys_own_tls() {
    let (app, mut config) = grpc_app().await;
    let dir = TempDir::new("grpc-tls");
    let ca = Ca::new("grpc CA");
    let (cert, key) = ca.server(&["grpc.test"]).write(dir.path(), "server");
    config.tls.mode = TlsMode::Required;
    config.tls.cert_file = Some(cert);
    config.tls.key_file = Some(key);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let proxy = start_proxy(config).await;
    run_client_through(
        &proxy,
        vec![ca_file.display().to_string(), "grpc.test".to_string()],
    )
    .await;
    // grpcio checked the proxy's certificate and needs h2 chosen by ALPN: its four calls went
    // over one TLS connection.
    assert_eq!(
        proxy.metric("elb_ws_proxy_tls_handshakes_total{result=\"ok\"}"),
        1.0
    );
    drop(app);
}
