//! Reading an HTTP/2 byte stream as frames without decoding them: where each frame header
//! falls, and how many frames of a kind arrive within a second.

use std::time::{Duration, Instant};

use super::CONTROL_FRAMES_PER_SECOND;

/// Where a byte stream of frames stands: inside a frame's payload, or in a frame header.
#[derive(Default)]
pub(super) struct Cursor {
    /// Payload bytes of the current frame still to come.
    payload_left: usize,
    /// The frame header read so far.
    header: [u8; 9],
    /// How much of `header` has arrived.
    header_len: usize,
}

impl Cursor {
    /// A cursor whose stream starts with `skip` bytes that are not frames (the preface).
    pub(super) fn after(skip: usize) -> Self {
        Cursor {
            payload_left: skip,
            ..Cursor::default()
        }
    }

    /// Walks `bytes`, handing each complete frame header (type, flags, stream id) to `seen`.
    pub(super) fn walk(&mut self, mut bytes: &[u8], mut seen: impl FnMut(u8, u8, u32)) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len == 9 {
                let h = &self.header;
                self.payload_left =
                    usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                self.header_len = 0;
                let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                seen(h[3], h[4], stream);
            }
        }
    }

    /// Bytes until the next point where the walk knows more: the end of the current payload
    /// or header; 0 at a frame boundary.
    pub(super) fn to_boundary(&self) -> usize {
        if self.payload_left > 0 {
            self.payload_left
        } else if self.header_len > 0 {
            9 - self.header_len
        } else {
            0
        }
    }
}

/// Control frames of one kind within the current second.
#[derive(Default)]
pub(super) struct Rate {
    since: Option<Instant>,
    count: u32,
}

impl Rate {
    /// Counts one frame; true when that makes a flood.
    pub(super) fn count(&mut self, now: Instant) -> bool {
        match self.since {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => self.count += 1,
            _ => (self.since, self.count) = (Some(now), 1),
        }
        self.count > CONTROL_FRAMES_PER_SECOND
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::guard::{ACK, HEADERS, PING, PREFACE_LEN, SETTINGS};

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn the_cursor_finds_every_frame_header_however_the_bytes_are_split() {
        let mut stream = crate::accept::detect::PREFACE.to_vec();
        stream.extend(frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
        stream.extend(frame(HEADERS, 0x5, 1, &[0x82; 20]));
        stream.extend(frame(PING, ACK, 0, &[1; 8]));
        let want = vec![(SETTINGS, 0, 0), (HEADERS, 0x5, 1), (PING, ACK, 0)];
        for split in 0..=stream.len() {
            let mut c = Cursor::after(PREFACE_LEN);
            let mut seen = Vec::new();
            c.walk(&stream[..split], |k, f, s| seen.push((k, f, s)));
            c.walk(&stream[split..], |k, f, s| seen.push((k, f, s)));
            assert_eq!(seen, want, "split at {split}");
            assert_eq!(c.to_boundary(), 0);
        }
    }

    #[test]
    fn a_flood_is_more_than_the_limit_within_one_second() {
        let t0 = Instant::now();
        let mut r = Rate::default();
        for _ in 0..CONTROL_FRAMES_PER_SECOND {
            assert!(!r.count(t0));
        }
        assert!(r.count(t0 + Duration::from_millis(900)));
        let mut r = Rate::default();
        for i in 0..3 * CONTROL_FRAMES_PER_SECOND {
            // A steady 999 a second never trips it.
            let at = t0 + Duration::from_micros(u64::from(i) * 1_001_001 / 1000);
            assert!(!r.count(at), "frame {i}");
        }
    }
}
