//! The binary as a user meets it: `--help`, `--version`, `check`, configuration errors, the
//! README's settings table, `healthcheck`, and SIGTERM.

mod common;

use std::process::Command;

use common::child::{ProxyProcess, BIN};
use elb_ws_proxy::config::SETTINGS;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

const SEED: &[(&str, &str)] = &[
    ("LISTEN_ON", "81"),
    ("LISTEN_ON_TLS", "444"),
    ("DESTINATION_HOSTNAME", "backend"),
    ("DESTINATION_PORT", "8080"),
];

#[test]
fn help_lists_every_setting_with_its_default() {
    let (code, out, _) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    for s in SETTINGS {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("  {}  ", s.name)))
            .unwrap_or_else(|| panic!("{} missing", s.name));
        assert_eq!(line, format!("  {}  default {}", s.name, s.default));
    }
    // Nothing overruns: every line fits in 100 columns, and the value formats are there.
    for line in out.lines() {
        assert!(line.chars().count() <= 100, "{line}");
    }
    for syntax in ["500ms, 5s, 2m, 1h", "KiB, MiB, GiB (1024)", "true or false"] {
        assert!(out.contains(syntax), "{syntax} missing:\n{out}");
    }
}

/// README's settings table, row by row: the variable and its default, in order, exactly as
/// `SETTINGS` (the source `Config::new` parses its defaults from) has them; nothing more.
#[test]
fn readme_table_is_the_settings_table() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let rows: Vec<(String, String)> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| {
            let mut cells = l.split(" | ");
            let name = cells.next()?.strip_suffix('`')?;
            let default = cells.next()?.trim_matches('`');
            name.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                .then(|| (name.to_owned(), default.to_owned()))
        })
        .collect();
    let expected: Vec<(String, String)> = SETTINGS
        .iter()
        .map(|s| (s.name.to_owned(), s.default.to_owned()))
        .collect();
    assert_eq!(
        rows, expected,
        "README's settings table differs from SETTINGS"
    );
}

#[test]
fn check_accepts_the_seed_variables_and_names_what_is_wrong() {
    let (code, out, _) = run(&["check"], SEED);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("configuration is valid"));
    // Values as the settings take them, each once.
    for written in [
        " proxy_protocol=required ",
        " destination_protocol=http1 ",
        " log_format=text ",
        " response_timeout=60s ",
        " max_header_bytes=64KiB ",
        " shutdown_delay=0s ",
        " tls_mode=off ",
    ] {
        assert!(out.contains(written), "{written} in {out}");
    }
    assert_eq!(out.matches(" plain=").count(), 1, "{out}");
    assert_eq!(out.matches(" tls=").count(), 1, "{out}");
    let (code, _, err) = run(&["check"], &SEED[1..]);
    assert_eq!(code, 2);
    assert_eq!(err.trim(), "elb-ws-proxy: configuration error: LISTEN_ON is not set: expected a TCP port number from 1 to 65535");
    let mut bad = SEED.to_vec();
    bad.push(("SHUTDOWN_TIMEOUT", "soon"));
    let (code, _, err) = run(&[], &bad);
    assert_eq!(code, 2, "start-up stops before binding anything");
    assert!(
        err.contains("SHUTDOWN_TIMEOUT=\"soon\" is invalid: expected a duration"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
    // A malformed log filter stops start-up like any other setting, naming it.
    let mut bad = SEED.to_vec();
    bad.push(("RUST_LOG", "bogus==="));
    for args in [&["check"][..], &[]] {
        let (code, _, err) = run(args, &bad);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("RUST_LOG=\"bogus===\" is invalid: expected a log level or filter"),
            "{err}"
        );
    }
    let (code, _, err) = run(&["frobnicate"], SEED);
    assert_eq!(code, 2);
    assert!(err.contains("unknown argument"));
}

#[test]
fn healthcheck_exit_codes_and_sigterm_exit_zero() {
    // A port that is bound but not listening: connecting to it is refused, and no other
    // process can take it while the test holds it.
    let held = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    held.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    let held_port = held.local_addr().unwrap().as_socket().unwrap().port();
    let common = [
        ("DESTINATION_HOSTNAME", "app.invalid".to_owned()),
        ("DESTINATION_PORT", "8080".to_owned()),
        ("LISTEN_ADDRESS", "127.0.0.1".to_owned()),
        ("TRUSTED_PROXIES", "10.0.0.0/8".to_owned()),
    ];
    let with_ports = |plain: u16, tls: u16| {
        let mut env = common.to_vec();
        env.push(("LISTEN_ON", plain.to_string()));
        env.push(("LISTEN_ON_TLS", tls.to_string()));
        env
    };
    let probe = |env: &[(&str, String)]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run(&["healthcheck"], &env)
    };
    let (code, _, err) = probe(&with_ports(1, held_port));
    assert_eq!(code, 1, "nothing listening: {err}");
    assert!(err.contains("cannot connect"), "{err}");
    // A configuration it cannot read is unhealthy (1), not a third outcome, and says why.
    let (code, _, err) = probe(&common);
    assert_eq!(code, 1, "no LISTEN_ON: {err}");
    assert!(err.contains("LISTEN_ON"), "{err}");
    // Up even though the app's name does not resolve, and healthy in required mode with only
    // a VPC range trusted: the probe's LOCAL header from loopback is accepted.
    let mut proxy = ProxyProcess::spawn(&common);
    let (code, _, err) = probe(&with_ports(proxy.plain.port(), proxy.tls.port()));
    assert_eq!(code, 0, "{err}");
    let status = proxy.terminate();
    assert_eq!(status.code(), Some(0));
    let logs = proxy.output();
    assert!(
        logs.contains("SIGTERM received") && logs.contains("shutdown complete"),
        "{logs}"
    );
}

/// `--version` names the commit the binary was built from, as git names it in this checkout
/// (`-dirty` with uncommitted changes); `unknown` only where there is no checkout.
#[test]
fn version_names_the_commit() {
    let (code, out, _) = run(&["--version"], &[]);
    assert_eq!(code, 0);
    let rest = out
        .trim()
        .strip_prefix(concat!("elb-ws-proxy ", env!("CARGO_PKG_VERSION"), " ("))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{out}"));
    let git = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match git {
        Ok(o) if o.status.success() => {
            let commit = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            let commit_part = rest.strip_suffix("-dirty").unwrap_or(rest);
            assert_eq!(commit_part, commit, "{out}");
        }
        _ => assert_eq!(rest, "unknown", "{out}"),
    }
}
