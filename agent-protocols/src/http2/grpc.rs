//! Counting gRPC length-prefixed messages (1-byte flag + 4-byte big-endian length + message)
//! in a stream's DATA payload, incrementally: messages span DATA frames and chunks, and only
//! their 5-byte prefixes are ever looked at (bodies are never buffered).

/// Per stream and direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageCounter {
    /// Prefix bytes of the next message seen so far (0..5).
    prefix: [u8; 5],
    have: u8,
    /// Body bytes of the current message still to come.
    remaining: u64,
    /// Bytes of the payload were not seen where a prefix may have been: counting stopped.
    lost: bool,
    /// A prefix's flag byte was neither 0 nor 1: not gRPC framing.
    bad_flag: bool,
}

impl MessageCounter {
    /// Feeds payload bytes; returns how many messages start in them.
    pub fn feed(&mut self, mut data: &[u8]) -> u32 {
        let mut started = 0u32;
        while !data.is_empty() && !self.lost {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.remaining -= n as u64;
                data = data.get(n..).unwrap_or_default();
                continue;
            }
            let want = 5 - usize::from(self.have);
            let n = want.min(data.len());
            if let (Some(dst), Some(src)) = (
                self.prefix
                    .get_mut(usize::from(self.have)..usize::from(self.have) + n),
                data.get(..n),
            ) {
                dst.copy_from_slice(src);
            }
            self.have += n as u8;
            data = data.get(n..).unwrap_or_default();
            if self.have == 5 {
                let [flag, a, b, c, d] = self.prefix;
                self.bad_flag |= flag > 1;
                self.remaining = u64::from(u32::from_be_bytes([a, b, c, d]));
                self.have = 0;
                started = started.saturating_add(1);
            }
        }
        started
    }

    /// `n` payload bytes went by unseen (a DATA frame longer than the capture).
    pub fn skip(&mut self, n: u64) {
        if self.have == 0 && self.remaining >= n {
            self.remaining -= n;
        } else if n > 0 {
            self.lost = true;
        }
    }

    /// Would skipping `n` bytes keep the count exact (they lie inside the current body)?
    pub fn skips_losslessly(&self, n: u64) -> bool {
        !self.lost && self.have == 0 && self.remaining >= n
    }

    /// Has everything so far been valid gRPC framing (and, at the end of the stream, does it
    /// end on a message boundary)?
    pub fn looks_grpc(&self, end_stream: bool) -> bool {
        !self.lost && !self.bad_flag && (!end_stream || (self.have == 0 && self.remaining == 0))
    }

    pub fn lost(&self) -> bool {
        self.lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(len: u32) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend(std::iter::repeat_n(b'x', len as usize));
        v
    }

    #[test]
    fn counts_messages_split_anywhere() {
        let mut all = msg(3);
        all.extend(msg(0));
        all.extend(msg(300));
        for cut in 0..=all.len() {
            let mut c = MessageCounter::default();
            let n = c.feed(&all[..cut]) + c.feed(&all[cut..]);
            assert_eq!(n, 3, "cut at {cut}");
            assert_eq!((c.have, c.remaining, c.lost), (0, 0, false));
        }
    }

    #[test]
    fn framing_check() {
        let mut c = MessageCounter::default();
        c.feed(&msg(3));
        assert!(c.looks_grpc(true));
        c.feed(&msg(3)[..4]);
        assert!(c.looks_grpc(false));
        assert!(!c.looks_grpc(true));
        let mut html = MessageCounter::default();
        html.feed(b"<html>hello</html>");
        assert!(!html.looks_grpc(false));
    }

    #[test]
    fn skip_inside_a_body_keeps_counting() {
        let mut c = MessageCounter::default();
        assert_eq!(c.feed(&[0, 0, 0, 0x10, 0]), 1); // 4096-byte message
        c.skip(4000);
        assert_eq!(c.feed(&[b'x'; 96]), 0);
        assert_eq!(c.feed(&msg(1)), 1);
        assert!(!c.lost());
        c.skip(10);
        assert!(c.lost());
        assert_eq!(c.feed(&msg(1)), 0);
    }
}
