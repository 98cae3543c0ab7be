//! Where rustls writes the records a TLS stream sends: after what is already waiting, with as
//! much room as rustls says it needs.

use std::io;

use rustls::unbuffered::{EncodeError, EncryptError};

/// The unsent end of a stream's output, where rustls writes records.
pub(super) struct Out<'a> {
    pub(super) buf: &'a mut Vec<u8>,
    pub(super) made: &'a mut usize,
}

impl Out<'_> {
    /// Lets `make` write after what is made, with as much room as it says it needs.
    fn make<E>(
        &mut self,
        mut make: impl FnMut(&mut [u8]) -> Result<usize, E>,
        needs: impl Fn(&E) -> Option<usize>,
    ) -> Result<(), E> {
        let start = *self.made;
        let n = match make(&mut self.buf[start..]) {
            Ok(n) => n,
            Err(e) => {
                let Some(needed) = needs(&e) else {
                    return Err(e);
                };
                self.buf.resize(start + needed, 0);
                make(&mut self.buf[start..])?
            }
        };
        *self.made = start + n;
        Ok(())
    }

    pub(super) fn encode(
        &mut self,
        make: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
    ) -> Result<(), EncodeError> {
        self.make(make, |e| match e {
            EncodeError::InsufficientSize(e) => Some(e.required_size),
            _ => None,
        })
    }

    pub(super) fn encrypt(
        &mut self,
        make: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
    ) -> io::Result<()> {
        self.make(make, |e| match e {
            EncryptError::InsufficientSize(e) => Some(e.required_size),
            _ => None,
        })
        .map_err(io::Error::other)
    }
}
