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
    // Durations only for what the app answered: the three GETs and the WebSocket's 101, not
    // the redirect.
    let duration_count = |code: &str| {
        metric(
            &after,
            &format!(
                "elb_ws_proxy_request_duration_seconds_count{{protocol=\"http1\",code=\"{code}\"}}"
            ),
        )
    };
    assert_eq!(duration_count("200"), 3.0);
    assert_eq!(duration_count("101"), 1.0);
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
    assert_eq!(access["client.address"], "192.0.2.60");
    assert_eq!(access["client.port"], 40000);
    assert_eq!(access["network.peer.address"], "127.0.0.1");
    assert_eq!(access["http.request.method"], "GET");
    assert_eq!(access["url.path"], "/logged");
    assert_eq!(access["http.response.status_code"], 200);
    assert!(access.get("status").is_none(), "{access}");
    assert!(access["upstream_us"].as_u64().is_some());
    assert!(access["duration_us"].as_u64() >= access["upstream_us"].as_u64());
    assert_eq!(
        access["request_id"].as_str().map(str::len),
        Some(32),
        "{access}"
    );
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
    // The start-up line gives each setting a field of its own, as the settings write it.
    let start = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.ends_with(" listening"))
        })
        .expect("a start-up line");
    let settings = &start["settings"];
    assert_eq!(
        settings["app"],
        format!("127.0.0.1:{}", app.addr.port()),
        "{start}"
    );
    assert_eq!(settings["proxy_protocol"], "required", "{start}");
    assert_eq!(settings["keepalive_timeout"], "75s", "{start}");
    assert_eq!(settings["max_header_bytes"], "64KiB", "{start}");
    assert_eq!(settings["log_format"], "json", "{start}");
    assert_eq!(settings["request_id_header"], "x-request-id", "{start}");
    assert!(start["plain"]
        .as_str()
        .is_some_and(|p| p.starts_with("127.0.0.1:")));
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

/// The samples of `/metrics` text: `(series name, labels without "le", value)`.
fn samples(text: &str) -> Vec<(String, Vec<String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => {
                    let labels = rest
                        .trim_end_matches('}')
                        .split(',')
                        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_owned()))
                        .filter(|k| k != "le")
                        .collect();
                    (n.to_owned(), labels)
                }
                None => (series.to_owned(), Vec::new()),
            };
            (name, labels, value.parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn request_durations_count_only_what_the_app_answered_on_every_path() {
    let app = start_app().await;
    let proxy = start_proxy(config_for(app.addr)).await;
    // The lean path, hyper's path (a body), and HTTP/2: each asks the app once.
    exchange(
        proxy.tls,
        &[v1("192.0.2.60", 443), get("/lean", "")].concat(),
    )
    .await;
    let post =
        b"POST /hyper HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi";
    exchange(proxy.tls, &[v1("192.0.2.61", 443), post.to_vec()].concat()).await;
    let mut c = h2_client(proxy.tls, &v1("192.0.2.62", 443)).await;
    let req = hyper::Request::builder()
        .uri("https://a.example/h2")
        .body(http_body_util::BodyExt::boxed(http_body_util::Empty::new()))
        .unwrap();
    assert_eq!(c.send_request(req).await.unwrap().status(), 200);
    // Answered by the proxy alone: /ping, a redirect, a refusal (two Host headers).
    exchange(
        proxy.tls,
        &[v1("192.0.2.63", 443), get("/ping", "")].concat(),
    )
    .await;
    exchange(proxy.plain, &[v1("192.0.2.63", 80), get("/", "")].concat()).await;
    exchange(
        proxy.tls,
        &[v1("192.0.2.63", 443), get("/", "Host: b\r\n")].concat(),
    )
    .await;
    let m = proxy.proxy_metrics.render();
    let count = |labels: &str| {
        metric(
            &m,
            &format!("elb_ws_proxy_request_duration_seconds_count{{{labels}}}"),
        )
    };
    assert_eq!(count("protocol=\"http1\",code=\"200\""), 2.0, "{m}");
    assert_eq!(count("protocol=\"h2\",code=\"200\""), 1.0, "{m}");
    assert!(
        !m.contains("code=\"301\"") && !m.contains("code=\"400\""),
        "{m}"
    );
    // Buckets reach past two minutes.
    assert!(
        m.contains("elb_ws_proxy_request_duration_seconds_bucket{le=\"131.072\",protocol=\"http1\",code=\"200\"} 2"),
        "{m}"
    );
    // Three requests reached the app, each over a connection the proxy opened or reused.
    assert_eq!(
        metric(&m, "elb_ws_proxy_upstream_response_seconds_count"),
        3.0,
        "{m}"
    );
    assert!(
        metric(&m, "elb_ws_proxy_upstream_connect_seconds_count") >= 1.0,
        "{m}"
    );
    // Everything is still counted by class.
    assert_eq!(
        metric(
            &m,
            "elb_ws_proxy_requests_total{protocol=\"http1\",class=\"4xx\"}"
        ),
        1.0
    );
    // The build and the process.
    let build = format!(
        "elb_ws_proxy_build_info{{version=\"{}\",revision=\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with(&build) && l.ends_with("} 1")),
        "{m}"
    );
    let rss = metric(&m, "process_resident_memory_bytes");
    assert!(rss > 1_000_000.0, "{rss}");
    assert!(metric(&m, "process_open_fds") >= 3.0);
    assert!(metric(&m, "process_max_fds") >= metric(&m, "process_open_fds"));
    assert!(metric(&m, "process_cpu_seconds_total") > 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = metric(&m, "process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 3600.0,
        "{started} vs {now}"
    );
}

/// README's list of metric families is the registry's: every family with its labels, and
/// nothing that is not there.
#[tokio::test]
async fn readme_lists_every_metric_family_with_its_labels() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    // TLS on, with certificate files, so its labelled families have series.
    let dir = TempDir::new("metrics-readme");
    let (cert, key) = common::tls::Ca::new("metrics CA")
        .server(&["default.test"])
        .write(dir.path(), "server");
    config.tls.cert_file = Some(cert);
    config.tls.key_file = Some(key);
    config.tls.mode = elb_ws_proxy::config::TlsMode::Auto;
    let proxy = start_proxy(config).await;
    exchange(proxy.tls, &[v1("192.0.2.64", 443), get("/", "")].concat()).await;
    // The certificate watcher exports the expiry on its first tick, just after start-up.
    let m = eventually("the certificate's expiry is exported", || {
        let m = proxy.proxy_metrics.render();
        async move {
            m.contains("elb_ws_proxy_tls_certificate_expiry_timestamp_seconds{")
                .then_some(m)
        }
    })
    .await;
    let mut registry: Vec<String> = Vec::new();
    for line in m.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        let series = if kind == "counter" {
            format!("{name}_total")
        } else {
            name.to_owned()
        };
        let labels: Vec<String> = samples(&m)
            .into_iter()
            .find(|(n, _, _)| n.starts_with(name))
            .map(|(_, l, _)| l)
            .unwrap_or_default();
        registry.push(if labels.is_empty() {
            series
        } else {
            format!("{series}{{{}}}", labels.join(","))
        });
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("- **Metrics**:")
        .nth(1)
        .and_then(|s| s.split("\n- **").next())
        .unwrap();
    let mut listed: Vec<String> = section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| t.starts_with("elb_ws_proxy_") || t.starts_with("process_"))
        .map(str::to_owned)
        .collect();
    listed.sort();
    registry.sort();
    assert_eq!(listed, registry);
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

/// `/metrics` read by a parser no one here wrote: Python `prometheus_client`'s OpenMetrics
/// parser, which is strict about the format (types, `_total`, buckets, `# EOF`).
#[tokio::test]
#[ignore = "needs python3 with prometheus_client (PyPI); .ci/run installs it and runs it with --ignored"]
async fn metrics_parse_with_the_prometheus_client_openmetrics_parser() {
    let app = start_app().await;
    let mut config = config_for(app.addr);
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let proxy = start_proxy(config).await;
    exchange(proxy.tls, &[v1("192.0.2.65", 443), get("/", "")].concat()).await;
    exchange(
        proxy.tls,
        &[v1("192.0.2.65", 443), get("/ping", "")].concat(),
    )
    .await;
    let scraped = exchange(
        proxy.metrics.unwrap(),
        b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
    )
    .await;
    let body = scraped.split_once("\r\n\r\n").unwrap().1.to_owned();
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}
d = families["elb_ws_proxy_request_duration_seconds"]
count = [s for s in d.samples if s.name.endswith("_count") and s.labels.get("code") == "200"]
print(d.type, count[0].labels["protocol"], int(count[0].value))
print(families["process_cpu_seconds"].type, families["elb_ws_proxy_build_info"].type)
print(len(families))
"#;
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 must be installed");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    });
    let out = within("the parser", out).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "histogram http1 1");
    assert_eq!(lines[1], "counter gauge");
    // Every family README lists but the two TLS certificate families, which have no series
    // without TLS.
    assert_eq!(lines[2], "23", "{stdout}");
}
