//! The server name a TLS client asked for, which rustls's unbuffered connection does not
//! tell: its ClientHello is read a second time by rustls's own `Acceptor`.

use rustls::server::Acceptor;

/// The ClientHello as far as it has come, then its name.
pub(super) enum Hello {
    Reading(Box<Acceptor>),
    Read(Option<String>),
}

impl Hello {
    /// Gives the acceptor the bytes just read; once it has the whole ClientHello, keeps its
    /// name. A ClientHello it cannot read is the connection's to refuse: no name then.
    pub(super) fn read(&mut self, mut bytes: &[u8]) {
        let Hello::Reading(acceptor) = self else {
            return;
        };
        while !bytes.is_empty() {
            match acceptor.read_tls(&mut bytes) {
                Ok(n) if n > 0 => {}
                _ => return *self = Hello::Read(None),
            }
        }
        match acceptor.accept() {
            Ok(None) => {}
            Ok(Some(accepted)) => {
                *self = Hello::Read(accepted.client_hello().server_name().map(str::to_owned))
            }
            Err(_) => *self = Hello::Read(None),
        }
    }
}
