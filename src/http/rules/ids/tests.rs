use super::*;
use crate::http::rules::test_fields;

fn rules() -> IdRules {
    IdRules {
        request_id: Some(HeaderName::from_static("x-request-id")),
        amzn_trace: true,
    }
}

fn judge(head: &str) -> Ids {
    rules().judge(test_fields(head).into_iter())
}

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn a_valid_request_id_is_kept_and_anything_else_replaced() {
    let long = "x".repeat(MAX_REQUEST_ID);
    let longer = "x".repeat(MAX_REQUEST_ID + 1);
    for (head, kept) in [
        ("X-Request-Id: abc-123\r\n", Some("abc-123")),
        ("x-request-id: a b/c=d\r\n", Some("a b/c=d")),
        (&format!("X-Request-Id: {long}\r\n")[..], Some(&long[..])),
        (&format!("X-Request-Id: {longer}\r\n")[..], None),
        ("X-Request-Id: caf\u{e9}\r\n", None),
        ("X-Request-Id: a\r\nX-Request-Id: b\r\n", None),
        ("Host: h\r\n", None),
    ] {
        let ids = judge(head);
        let id = ids.request_id().unwrap();
        match kept {
            Some(v) => assert_eq!(id, v, "{head}"),
            None => assert!(is_hex(id, 32), "{head}: {id}"),
        }
        let (name, value) = ids.to_client().unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("x-request-id", id)
        );
    }
    assert_ne!(judge("").request_id(), judge("").request_id());
}

#[test]
fn the_request_id_header_is_the_configured_one_or_none() {
    let custom = IdRules {
        request_id: Some(HeaderName::from_static("x-correlation-id")),
        amzn_trace: false,
    };
    let ids = custom.judge(test_fields("X-Correlation-Id: c1\r\nX-Request-Id: r\r\n").into_iter());
    assert_eq!(ids.request_id(), Some("c1"));
    assert!(ids.forwards("x-request-id") && !ids.forwards("X-Correlation-Id"));
    assert_eq!(ids.amzn_root(), None);
    assert!(ids.forwards("x-amzn-trace-id"));
    let off = IdRules::off().judge(test_fields("X-Request-Id: r\r\n").into_iter());
    assert_eq!((off.request_id(), off.to_client()), (None, None));
    assert_eq!(off.to_app().count(), 0);
    assert!(off.forwards("x-request-id") && off.forwards_response("x-request-id"));
}

#[test]
fn amzn_trace_ids_are_kept_when_their_root_is_valid() {
    let root = "1-67891233-abcdef012345678912345678";
    for (value, kept) in [
        (format!("Root={root}"), true),
        (
            format!("Root={root};Parent=53995c3f42cd8ad8;Sampled=1"),
            true,
        ),
        (
            format!("Self=1-67891234-12456789abcdef012345678;Root={root}"),
            true,
        ),
        ("Root=1-6789123-abcdef012345678912345678".into(), false),
        ("Root=2-67891233-abcdef012345678912345678".into(), false),
        ("Root=1-67891233-abcdef01234567891234567g".into(), false),
        (format!("Root={root}; Sampled=1"), false),
        ("Parent=53995c3f42cd8ad8".into(), false),
        (format!("Root={root};{}", "x".repeat(256)), false),
    ] {
        let ids = judge(&format!("X-Amzn-Trace-Id: {value}\r\n"));
        let sent = ids.to_app().find(|(n, _)| n.as_str() == "x-amzn-trace-id");
        let sent = sent.unwrap().1.to_str().unwrap();
        if kept {
            assert_eq!(sent, value);
            assert_eq!(ids.amzn_root(), Some(root));
        } else {
            assert_ne!(sent, value);
            assert_ne!(ids.amzn_root(), Some(root));
        }
    }
}

#[test]
fn a_made_amzn_trace_id_is_an_albs() {
    let ids = judge("");
    let root = ids.amzn_root().unwrap().to_owned();
    let (_, value) = ids
        .to_app()
        .find(|(n, _)| n.as_str() == "x-amzn-trace-id")
        .unwrap();
    assert_eq!(value.to_str().unwrap(), format!("Root={root}"));
    let (seconds, random) = root.strip_prefix("1-").unwrap().split_once('-').unwrap();
    assert!(is_hex(seconds, 8) && is_hex(random, 24), "{root}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let made = u64::from_str_radix(seconds, 16).unwrap();
    assert!(now.abs_diff(made) <= 2, "{made} vs {now}");
}

#[test]
fn traceparent_passes_when_valid_and_goes_with_tracestate_when_not() {
    for (value, valid) in [
        (PARENT.to_owned(), true),
        (PARENT.replacen("00-", "01-", 1) + "-more", true),
        (PARENT.replacen("00-", "01-", 1), true),
        (PARENT.to_owned() + "-more", false),
        (PARENT.replacen("00-", "ff-", 1), false),
        (PARENT.to_uppercase(), false),
        (
            PARENT.replace("4bf92f3577b34da6a3ce929d0e0e4736", &"0".repeat(32)),
            false,
        ),
        (PARENT.replace("00f067aa0ba902b7", &"0".repeat(16)), false),
        (PARENT[..54].to_owned(), false),
        (PARENT.replacen('-', "_", 1), false),
    ] {
        let ids = judge(&format!("traceparent: {value}\r\ntracestate: a=1\r\n"));
        assert_eq!(ids.forwards("traceparent"), valid, "{value}");
        assert_eq!(ids.forwards("TraceState"), valid, "{value}");
        let trace = valid.then_some("4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ids.trace_id(), trace, "{value}");
    }
    let twice = judge(&format!(
        "traceparent: {PARENT}\r\ntraceparent: {PARENT}\r\n"
    ));
    assert!(!twice.forwards("traceparent"));
    let none = judge("tracestate: a=1\r\n");
    assert!(none.forwards("tracestate") && none.trace_id().is_none());
}

#[test]
fn the_proxy_writes_the_id_headers_itself() {
    let ids =
        judge("X-Request-Id: r1\r\nX-Amzn-Trace-Id: Root=1-67891233-abcdef012345678912345678\r\n");
    assert!(!ids.forwards("X-Request-Id") && !ids.forwards("x-amzn-trace-id"));
    assert!(ids.forwards("accept") && ids.forwards("traceparent"));
    let sent: Vec<_> = ids
        .to_app()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
        .collect();
    assert_eq!(
        sent,
        [
            ("x-request-id", "r1"),
            (
                "x-amzn-trace-id",
                "Root=1-67891233-abcdef012345678912345678"
            )
        ]
    );
    assert!(!ids.forwards_response("X-Request-ID"));
    assert!(ids.forwards_response("x-amzn-trace-id"));
}
