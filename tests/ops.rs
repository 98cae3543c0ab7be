//! What operators rely on: Prometheus metrics that move, JSON logs that parse line by line,
//! and compose files that say what the README says.

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use yaml_rust2::{Yaml, YamlLoader};

use common::*;

#[tokio::test]
async fn metrics_endpoint_counts_what_happened() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let proxy = start_proxy(config).await;
    let metrics_addr = proxy.metrics.unwrap();
    let scrape = || async move {
        exchange(
            metrics_addr,
            b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
        )
        .await
    };
    let before = scrape().await;
    assert_eq!(status(&before), 200, "{before}");
    // Other methods on /metrics are not allowed (and say which are); other paths do not exist.
    let post = exchange(
        metrics_addr,
        b"POST /metrics HTTP/1.1\r\nHost: m\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&post), 405, "{post}");
    assert!(
        post.to_ascii_lowercase().contains("allow: get, head"),
        "{post}"
    );
    let elsewhere = exchange(
        metrics_addr,
        b"GET /stats HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&elsewhere), 404, "{elsewhere}");
    assert_eq!(
        metric(
            &before,
            "elb_ws_proxy_requests_total{protocol=\"http1\",class=\"2xx\"}"
        ),
        0.0
    );

    for _ in 0..3 {
        exchange(proxy.tls, &[v1("192.0.2.50", 443), get("/", "")].concat()).await;
    }
    exchange(proxy.plain, &[v1("192.0.2.50", 80), get("/", "")].concat()).await;
    exchange(proxy.tls, b"garbage\r\n\r\n").await;
    let mut ws = websocket(proxy.tls, &v1("192.0.2.51", 443), "/ws").await;
    within("hello", ws.next()).await.unwrap().unwrap();
    ws.send(Message::text("x".repeat(1000))).await.unwrap();
    within("echo", ws.next()).await.unwrap().unwrap();
    let during = scrape().await;
    assert_eq!(metric(&during, "elb_ws_proxy_websocket_tunnels_open"), 1.0);
    drop(ws);

    let after = eventually("the tunnel closes", || async {
        let m = scrape().await;
        (metric(&m, "elb_ws_proxy_websocket_tunnels_open") == 0.0).then_some(m)
    })
    .await;
    assert_eq!(
        metric(
            &after,
            "elb_ws_proxy_requests_total{protocol=\"http1\",class=\"2xx\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            &after,
            "elb_ws_proxy_requests_total{protocol=\"http1\",class=\"3xx\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &after,
            "elb_ws_proxy_requests_total{protocol=\"http1\",class=\"1xx\"}"
        ),
        1.0,
        "the 101"
    );
    assert_eq!(
        metric(
            &after,
            "elb_ws_proxy_connections_accepted_total{listener=\"tls\"}"
        ),
        5.0
    );
    assert_eq!(
        metric(
            &after,
            "elb_ws_proxy_connections_accepted_total{listener=\"plain\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &after,
            "elb_ws_proxy_connections_refused_total{reason=\"proxy_header_missing\"}"
        ),
        1.0
    );
    assert_eq!(metric(&after, "elb_ws_proxy_websocket_tunnels_total"), 1.0);
    assert!(
        metric(
            &after,
            "elb_ws_proxy_client_bytes_total{direction=\"from_client\"}"
        ) > 1000.0
    );
    assert!(
        metric(
            &after,
            "elb_ws_proxy_client_bytes_total{direction=\"to_client\"}"
        ) > 1000.0
    );
    assert_eq!(
        metric(&after, "elb_ws_proxy_request_duration_seconds_count"),
        5.0
    );
    assert_eq!(
        metric(
            &after,
            "elb_ws_proxy_upstream_errors_total{kind=\"connect\"}"
        ),
        0.0
    );
    let other = exchange(
        metrics_addr,
        b"GET / HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&other), 404);
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let app = start_app().await;
    let mut proxy = child::ProxyProcess::spawn(&[
        ("DESTINATION_HOSTNAME", "127.0.0.1".into()),
        ("DESTINATION_PORT", app.addr.port().to_string()),
        ("LOG_FORMAT", "json".into()),
    ]);
    let resp = exchange(
        proxy.tls,
        &[v1("192.0.2.60", 443), get("/logged", "")].concat(),
    )
    .await;
    assert_eq!(status(&resp), 200);
    exchange(proxy.tls, b"no header here\r\n\r\n").await;
    assert_eq!(proxy.terminate().code(), Some(0));
    let out = proxy.output();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access = lines
        .iter()
        .find(|l| l["target"] == "access")
        .expect("an access line");
    assert_eq!(access["client"], "192.0.2.60:40000");
    assert_eq!(access["method"], "GET");
    assert_eq!(access["path"], "/logged");
    assert_eq!(access["status"], 200);
    assert!(access["upstream_ms"].as_f64().is_some());
    let refused = lines
        .iter()
        .find(|l| {
            l["message"] == "connection refused"
                && l["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("no PROXY protocol header")
        })
        .expect("a refusal line saying why");
    assert_eq!(refused["level"], "WARN");
    assert_eq!(
        refused["peer"]
            .as_str()
            .map(|p| p.starts_with("127.0.0.1:")),
        Some(true)
    );
    assert!(lines.iter().any(|l| l["message"] == "shutdown complete"));
}

fn load(name: &str) -> Yaml {
    let path = format!("{}/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .remove(0)
}

#[test]
fn compose_files_parse_and_wire_the_chain() {
    let base = load("docker-compose.yml");
    let proxy = &base["services"]["proxy"];
    assert_eq!(proxy["build"].as_str(), Some("."));
    for var in [
        "LISTEN_ON",
        "LISTEN_ON_TLS",
        "DESTINATION_HOSTNAME",
        "DESTINATION_PORT",
    ] {
        assert!(!proxy["environment"][var].is_badvalue(), "{var} missing");
    }
    let app_name = proxy["environment"]["DESTINATION_HOSTNAME"]
        .as_str()
        .unwrap();
    assert!(
        !base["services"][app_name]["image"].is_badvalue(),
        "the app service exists"
    );
    let elb = load("docker-compose.elb.yml");
    let volume = elb["services"]["elb"]["volumes"][0].as_str().unwrap();
    let cfg_path = volume.split(':').next().unwrap().trim_start_matches("./");
    let cfg =
        std::fs::read_to_string(format!("{}/{cfg_path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let plain = proxy["environment"]["LISTEN_ON"].as_str().unwrap();
    let tls = proxy["environment"]["LISTEN_ON_TLS"].as_str().unwrap();
    assert!(cfg.contains(&format!("proxy:{plain} send-proxy")), "{cfg}");
    assert!(cfg.contains(&format!("proxy:{tls} send-proxy")), "{cfg}");
}

/// The Kubernetes manifest in deploy/kubernetes: parses, targets the AWS Load Balancer
/// Controller with PROXY protocol and a TLS listener that has a certificate, checks `/ping` on
/// the port the proxy serves it on, keeps the app up through the proxy's whole drain, and gives
/// the pod the time that takes.
#[test]
fn the_kubernetes_example_is_consistent() {
    let yaml = std::fs::read_to_string(format!(
        "{}/deploy/kubernetes/web.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let yaml = yaml.as_str();
    let docs = YamlLoader::load_from_str(yaml).unwrap();
    let (deployment, service) = (&docs[0], &docs[1]);
    let a = &service["metadata"]["annotations"];
    let ann = |k: &str| {
        a[format!("service.beta.kubernetes.io/aws-load-balancer-{k}").as_str()]
            .as_str()
            .unwrap_or_else(|| panic!("annotation {k} missing"))
            .to_owned()
    };
    assert_eq!(ann("type"), "external");
    assert_eq!(ann("nlb-target-type"), "ip");
    assert_eq!(ann("proxy-protocol"), "*");
    assert!(ann("ssl-cert").starts_with("arn:aws:acm:"));
    assert_eq!(ann("ssl-ports"), "443");
    assert_eq!(ann("healthcheck-path"), "/ping");
    let proxy = deployment["spec"]["template"]["spec"]["containers"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some("proxy"))
        .unwrap();
    let env = |name: &str| {
        proxy["env"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|e| e["name"].as_str() == Some(name))
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("{name} missing"))
            .to_owned()
    };
    assert_eq!(ann("healthcheck-port"), env("LISTEN_ON_TLS"));
    let https = service["spec"]["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|p| p["port"].as_i64() == Some(443))
        .unwrap();
    assert_eq!(https["targetPort"].as_str(), Some("tls-origin"));
    let delay = elb_ws_proxy::config::parse_duration(&env("SHUTDOWN_DELAY")).unwrap();
    let interval: u64 = ann("healthcheck-interval").parse().unwrap();
    let threshold: u64 = ann("healthcheck-unhealthy-threshold").parse().unwrap();
    assert!(
        delay > Duration::from_secs(interval * threshold),
        "SHUTDOWN_DELAY {delay:?} must outlast {threshold} failed checks {interval} s apart"
    );
    assert_eq!(ann("alpn-policy"), "HTTP2Preferred");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(proxy[probe]["httpGet"]["path"].as_str(), Some("/ping"));
        assert_eq!(proxy[probe]["httpGet"]["port"].as_str(), Some("tls-origin"));
    }
    let timeout = elb_ws_proxy::config::parse_duration(&env("SHUTDOWN_TIMEOUT")).unwrap();
    let app = deployment["spec"]["template"]["spec"]["containers"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some("app"))
        .unwrap();
    let pre_stop = app["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .expect("the app's preStop sleep") as u64;
    assert!(
        Duration::from_secs(pre_stop) >= delay + timeout,
        "the app must outlive the proxy's drain"
    );
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap() as u64;
    assert!(
        grace > pre_stop,
        "the grace period must cover the app's preStop and its stop"
    );
}
