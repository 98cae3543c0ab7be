//! HAProxy as the load balancer in front of the proxy (TCP mode, as an ELB or NLB is). The test
//! binds the frontend's socket itself and hands it over as `fd@3`, so there is no port to guess.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use super::TempDir;

/// A running HAProxy; killed when dropped.
pub struct Haproxy {
    child: Child,
    /// Where clients connect (the balancer's listener).
    pub addr: SocketAddr,
    dir: TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Haproxy {
    /// Starts HAProxy in TCP mode forwarding to `backend` with `server_options` (for example
    /// `send-proxy-v2`); `bind_options` follow the frontend's `bind fd@3` (for example
    /// `ssl crt <pem> alpn h2,http/1.1`).
    pub async fn start(backend: SocketAddr, bind_options: &str, server_options: &str) -> Haproxy {
        Self::with_backend(
            bind_options,
            &format!("  server proxy {backend} {server_options}\n"),
        )
    }

    /// Starts HAProxy in TCP mode with `backend` as the body of its `instances` backend (the
    /// servers, their checks, the balancing); `stats socket` is `dir/admin.sock`.
    pub fn with_backend(bind_options: &str, backend: &str) -> Haproxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let dir = TempDir::new("haproxy");
        let cfg = format!(
            "global\n  maxconn 1024\n  stats socket {}/admin.sock\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
             frontend elb\n  bind fd@3 {bind_options}\n  unique-id-format %{{+X}}o%ci%cp%Ts%rt\n  default_backend instances\n\
             backend instances\n{backend}",
            dir.path().display()
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let fd = listener.as_raw_fd();
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if fd == 3 {
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect(
            "haproxy must be installed for this test (apt-get install haproxy; .ci/run does it)",
        );
        // The socket listens already: clients that connect before HAProxy is up wait in its
        // accept queue, so there is nothing to wait for here.
        drop(listener);
        Haproxy { child, addr, dir }
    }

    /// The status (`UP`, `DOWN`, `MAINT`…) HAProxy gives `server` of the `instances`
    /// backend now, from its stats socket; `None` before HAProxy is up.
    pub fn server_status(&self, server: &str) -> Option<String> {
        use std::io::{Read, Write};
        let mut s =
            std::os::unix::net::UnixStream::connect(self.dir.path().join("admin.sock")).ok()?;
        s.write_all(b"show stat\n").ok()?;
        let mut csv = String::new();
        s.read_to_string(&mut csv).ok()?;
        let header: Vec<&str> = csv
            .lines()
            .next()?
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let column = header.iter().position(|h| *h == "status")?;
        csv.lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.len() > column && f[0] == "instances" && f[1] == server)
            .map(|f| f[column].to_owned())
    }
}

/// A self-signed certificate and key in one PEM file, as HAProxy's `crt` takes it.
pub fn certificate(dir: &TempDir) -> std::path::PathBuf {
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl must be installed");
    assert!(status.success());
    let pem = dir.path().join("both.pem");
    let both = [std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap()].concat();
    std::fs::write(&pem, both).unwrap();
    pem
}
