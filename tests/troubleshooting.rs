//! `docs/troubleshooting.md` against the log. Each row's line is cut into its pieces: the
//! message, then each `key=value` it shows, `…` standing for what varies. The proxy binary
//! (text logs) is made to write the lines a test can provoke in a few seconds; each of those
//! rows must match one log line piece by piece, in order and byte for byte, quotes included.
//! Every other row's message must be text the source writes.

mod common;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use common::*;

/// The first code span of each row of the table: the line the row is about.
fn documented() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/troubleshooting.md"
    ))
    .unwrap();
    doc.lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l[3..].split('`').next().map(str::to_owned))
        .collect()
}

/// A documented line's pieces, each split at `…` into the fragments that must appear.
fn pieces(line: &str) -> Vec<Vec<String>> {
    let mut pieces = vec![String::new()];
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        let rest = &line[i + c.len_utf8()..];
        let key = rest.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        });
        if c == ' ' && !quoted && key {
            pieces.push(String::new());
            continue;
        }
        if c == '"' {
            quoted = !quoted;
        }
        pieces.last_mut().unwrap().push(c);
    }
    let fragments = |p: &String| {
        p.split('…')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect()
    };
    pieces.iter().map(fragments).collect()
}

/// Whether `log` has every fragment of `documented`, in order.
fn matches(log: &str, documented: &[Vec<String>]) -> bool {
    let mut at = 0;
    documented
        .iter()
        .flatten()
        .all(|fragment| match log[at..].find(fragment.as_str()) {
            Some(i) => {
                at += i + fragment.len();
                true
            }
            None => false,
        })
}

/// Every `.rs` file under `src`, as one text.
fn source() -> String {
    fn walk(dir: &std::path::Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = String::new();
    walk(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut out,
    );
    out
}

/// The rows this test provokes, by the start of their line.
const PROVOKED: &[&str] = &[
    "connection refused reason=\"no PROXY protocol header",
    "connection refused reason=\"malformed PROXY",
    "request without a PROXY header refused",
    "upstream request failed kind=\"connect\"",
    "request headers not received within REQUEST_HEADER_TIMEOUT",
    "request refused status=",
];

#[tokio::test]
async fn the_table_matches_the_log_byte_for_byte() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = dead.local_addr().unwrap().port();
    drop(dead);
    let mut proxy = child::ProxyProcess::spawn(&[
        ("DESTINATION_HOSTNAME", "127.0.0.1".into()),
        ("DESTINATION_PORT", gone.to_string()),
        ("REQUEST_HEADER_TIMEOUT", "1s".into()),
    ]);
    let header = v1("192.0.2.90", 443);
    exchange(proxy.tls, b"hello there\r\n\r\n").await;
    exchange(proxy.tls, b"PROXY TCP4 192.0.2.1\r\n").await;
    let health_check_then_more =
        b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    exchange(proxy.tls, health_check_then_more).await;
    exchange(proxy.tls, &[header.clone(), get("/x", "")].concat()).await;
    exchange(
        proxy.tls,
        &[header.clone(), b"GET / HTTP/1.1\r\n\r\n".to_vec()].concat(),
    )
    .await;
    // A head that starts and stalls: the proxy closes it after REQUEST_HEADER_TIMEOUT.
    let mut stalled = TcpStream::connect(proxy.tls).await.unwrap();
    stalled
        .write_all(&[header, b"GET / HTTP/1.1\r\nHo".to_vec()].concat())
        .await
        .unwrap();
    let _ = within("the stalled head's close", read_all(&mut stalled)).await;
    let lines = documented();
    assert!(lines.len() >= 20, "{lines:?}");
    for start in PROVOKED {
        let line = lines.iter().find(|l| l.starts_with(start));
        let line = line.unwrap_or_else(|| panic!("no row for {start}"));
        let wanted = pieces(line);
        proxy.wait_for_line(|log| matches(log, &wanted));
    }
    assert_eq!(proxy.terminate().code(), Some(0));
    let src = source();
    for line in &lines {
        let message = &pieces(line)[0];
        for fragment in message {
            assert!(
                src.contains(fragment.as_str()),
                "{fragment:?} (from {line:?}) is not in the source"
            );
        }
    }
}

#[test]
fn lines_are_cut_into_their_pieces() {
    let p = pieces(
        r#"connection refused reason="VPC endpoint vpce-… is not in ALLOWED_VPC_ENDPOINTS" x=1"#,
    );
    assert_eq!(
        p,
        [
            vec!["connection refused".to_owned()],
            vec![
                "reason=\"VPC endpoint vpce-".to_owned(),
                "is not in ALLOWED_VPC_ENDPOINTS\"".to_owned()
            ],
            vec!["x=1".to_owned()],
        ]
    );
    assert!(matches("WARN x: connection refused peer=1 reason=\"VPC endpoint vpce-9 is not in ALLOWED_VPC_ENDPOINTS\" x=1", &p));
    assert!(!matches(
        "connection refused reason=VPC endpoint vpce-9 is not in ALLOWED_VPC_ENDPOINTS x=1",
        &p
    ));
}
