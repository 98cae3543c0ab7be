//! The binary as a user meets it: `--help`, `--version`, `check`, configuration errors, the
//! README's settings table, `healthcheck`, and SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use elb_ws_proxy::config::SETTINGS;

const BIN: &str = env!("CARGO_BIN_EXE_elb-ws-proxy");

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
            .find(|l| l.trim_start().starts_with(s.name))
            .unwrap_or_else(|| panic!("{} missing", s.name));
        assert!(line.contains(s.default), "{line}");
    }
    let (code, out, _) = run(&["--version"], &[]);
    assert_eq!(
        (code, out.trim()),
        (
            0,
            format!("elb-ws-proxy {}", env!("CARGO_PKG_VERSION")).as_str()
        )
    );
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
                .all(|b| b.is_ascii_uppercase() || b == b'_')
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
    let (code, _, err) = run(&["frobnicate"], SEED);
    assert_eq!(code, 2);
    assert!(err.contains("unknown argument"));
}

#[test]
fn healthcheck_exit_codes_and_sigterm_exit_zero() {
    let (plain, tls) = (free_port().to_string(), free_port().to_string());
    let env = [
        ("LISTEN_ON", plain.as_str()),
        ("LISTEN_ON_TLS", tls.as_str()),
        ("DESTINATION_HOSTNAME", "app.invalid"),
        ("DESTINATION_PORT", "8080"),
        ("LISTEN_ADDRESS", "127.0.0.1"),
        ("TRUSTED_PROXIES", "10.0.0.0/8"),
    ];
    let (code, _, err) = run(&["healthcheck"], &env);
    assert_eq!(code, 1, "nothing listening yet: {err}");
    assert!(err.contains("cannot connect"), "{err}");
    let mut child = Command::new(BIN)
        .env_clear()
        .envs(env)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    // Up even though the app's name does not resolve, and healthy in required mode with only
    // a VPC range trusted: the probe's LOCAL header from loopback is accepted.
    loop {
        let (code, _, err) = run(&["healthcheck"], &env);
        if code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "healthcheck never passed: {err}");
        std::thread::sleep(Duration::from_millis(50));
    }
    common::sigterm(child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let mut logs = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut logs).unwrap();
    assert!(
        logs.contains("SIGTERM received") && logs.contains("shutdown complete"),
        "{logs}"
    );
}
