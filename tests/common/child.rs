//! The proxy binary as a child process, for tests that need what only a process has (signals,
//! exit codes, stdout, resource limits). It binds port 0 and reports its ports in its start-up
//! line, so no test guesses a free port; it is killed when the test lets go of it, pass or fail.

use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::WAIT;

pub const BIN: &str = env!("CARGO_BIN_EXE_elb-ws-proxy");

/// A running proxy binary.
pub struct ProxyProcess {
    child: Child,
    /// The plain port's address, read from the start-up line.
    pub plain: SocketAddr,
    /// The TLS-origin port's address, read from the start-up line.
    pub tls: SocketAddr,
    /// Every stdout line so far.
    lines: Arc<Mutex<Vec<String>>>,
    /// Wakes when a line arrives.
    arrivals: mpsc::Receiver<()>,
}

impl ProxyProcess {
    /// Starts the binary with `env` only, listening on 127.0.0.1 port 0 unless `env` says otherwise.
    pub fn spawn(env: &[(&str, String)]) -> Self {
        Self::spawn_with(env, |_| {})
    }

    /// As `spawn`, with a chance to adjust the command (for example a `pre_exec` hook).
    pub fn spawn_with(env: &[(&str, String)], adjust: impl FnOnce(&mut Command)) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .envs([
                ("LISTEN_ON", "0"),
                ("LISTEN_ON_TLS", "0"),
                ("LISTEN_ADDRESS", "127.0.0.1"),
            ])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped());
        adjust(&mut cmd);
        let mut child = cmd.spawn().expect("the proxy binary starts");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, arrivals) = mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(line);
                if tx.send(()).is_err() {
                    return;
                }
            }
        });
        let mut me = ProxyProcess {
            child,
            plain: "0.0.0.0:0".parse().unwrap(),
            tls: "0.0.0.0:0".parse().unwrap(),
            lines,
            arrivals,
        };
        let start = me.wait_for_line(|l| l.contains(" listening"));
        me.plain = field_addr(&start, "plain");
        me.tls = field_addr(&start, "tls");
        me
    }

    /// Waits (bounded) for a stdout line that satisfies `matches` and returns it.
    pub fn wait_for_line(&mut self, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| matches(l)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.arrivals.recv_timeout(left) {
                Ok(()) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no such line within {WAIT:?}; output:\n{}", self.output())
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if let Some(l) = self.lines.lock().unwrap().iter().find(|l| matches(l)) {
                        return l.clone();
                    }
                    panic!("the proxy exited; output:\n{}", self.output())
                }
            }
        }
    }

    /// Everything written to stdout so far.
    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (bounded) for the exit; the output is complete afterwards.
    pub fn terminate(&mut self) -> ExitStatus {
        super::sigterm(self.child.id());
        let status = self.wait_exit(WAIT);
        // The reader thread ends at EOF; wait for it so `output` holds the last lines.
        while self.arrivals.recv_timeout(Duration::from_secs(5)).is_ok() {}
        status
    }

    /// Waits (bounded) for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the proxy did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads ` name=addr` (text logs, where the field precedes the settings summary) or `"name":"addr"` (JSON logs) from a log line.
fn field_addr(line: &str, name: &str) -> SocketAddr {
    let text = format!(" {name}=");
    let json = format!("\"{name}\":\"");
    let rest = line
        .split_once(&json)
        .or_else(|| line.split_once(&text))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        .1;
    let end = rest.find([' ', '"']).unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|e| panic!("{name} in {line}: {e}"))
}
