//! The one generic loop every protocol runs in: per-direction buffers, timing, skipping frame
//! tails the capture did not carry, resync after lost bytes, caps, and stitching.

use std::collections::VecDeque;

use crate::{Dir, Parsed, ParserConfig, Protocol, Record, Timed};

/// Counters of what a driver dropped or repaired; summed by conntrack into agent metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DriverStats {
    pub frames: u64,
    pub records: u64,
    pub parse_errors: u64,
    pub resyncs: u64,
    /// Bytes the kernel did not capture that could not be skipped as part of a frame.
    pub bytes_lost: u64,
    /// Partial frames dropped because they grew over the buffer cap.
    pub buffer_overflows: u64,
    /// Frames dropped because the other direction never answered and the queue was full.
    pub queue_overflows: u64,
    /// Frames dropped half-paired because the rest of their exchange was sampled out.
    pub frames_abandoned: u64,
}

impl DriverStats {
    pub fn add(&mut self, o: &DriverStats) {
        self.frames += o.frames;
        self.records += o.records;
        self.parse_errors += o.parse_errors;
        self.resyncs += o.resyncs;
        self.bytes_lost += o.bytes_lost;
        self.buffer_overflows += o.buffer_overflows;
        self.queue_overflows += o.queue_overflows;
        self.frames_abandoned += o.frames_abandoned;
    }
}

#[derive(Debug, Clone, Copy)]
struct ChunkTime {
    /// Offset one past this chunk's last byte, relative to the buffer start.
    end: usize,
    start_ns: u64,
    end_ns: u64,
}

struct DirState<F> {
    /// Bytes `buf[start..]` are live; consumed bytes are dropped lazily (see `compact`) so that
    /// many small frames in one chunk cost linear, not quadratic, time.
    buf: Vec<u8>,
    start: usize,
    chunks: VecDeque<ChunkTime>,
    /// Bytes of the current frame's tail still to drop as they arrive.
    skip: u64,
    /// The frame whose tail is being skipped; stamped with the time its last byte arrives.
    pending: Option<F>,
    /// Bytes were lost mid-frame: find a frame boundary before parsing again.
    desynced: bool,
    frames: VecDeque<F>,
}

impl<F> Default for DirState<F> {
    fn default() -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            chunks: VecDeque::new(),
            skip: 0,
            pending: None,
            desynced: false,
            frames: VecDeque::new(),
        }
    }
}

impl<F> DirState<F> {
    /// The unconsumed bytes.
    fn live(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or(&[])
    }

    fn live_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Marks `n` bytes consumed. Chunk offsets are live-relative, so they shift by `n`.
    fn drain(&mut self, n: usize) {
        let n = n.min(self.live_len());
        self.start += n;
        while let Some(c) = self.chunks.front_mut() {
            if c.end <= n {
                self.chunks.pop_front();
            } else {
                break;
            }
        }
        for c in self.chunks.iter_mut() {
            c.end -= n;
        }
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Drops consumed bytes before appending, once they are at least half the buffer.
    fn compact(&mut self) {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.chunks.clear();
    }

    fn start_ns(&self) -> u64 {
        self.chunks.front().map_or(0, |c| c.start_ns)
    }

    /// Arrival time of the byte at `offset - 1` (the last byte of a frame ending at `offset`).
    fn end_ns_at(&self, offset: usize) -> u64 {
        self.chunks
            .iter()
            .find(|c| c.end >= offset)
            .or(self.chunks.back())
            .map_or(0, |c| c.end_ns)
    }
}

pub struct Driver<P: Protocol> {
    state: P::State,
    req: DirState<P::Frame>,
    resp: DirState<P::Frame>,
    max_buffer: usize,
    max_queued: usize,
    stats: DriverStats,
}

impl<P: Protocol> Driver<P> {
    pub fn new(cfg: &ParserConfig) -> Self {
        let mut state = P::State::default();
        P::configure(&mut state, cfg);
        Self {
            state,
            req: DirState::default(),
            resp: DirState::default(),
            max_buffer: cfg.max_buffer,
            max_queued: cfg.max_queued_frames,
            stats: DriverStats::default(),
        }
    }

    pub fn stats(&self) -> &DriverStats {
        &self.stats
    }

    pub fn state(&self) -> &P::State {
        &self.state
    }

    /// Feeds one captured chunk: `data` is the captured prefix of `total_len` bytes that the
    /// application actually transferred, between `start_ns` and `end_ns`.
    pub fn feed(
        &mut self,
        dir: Dir,
        data: &[u8],
        total_len: u64,
        start_ns: u64,
        end_ns: u64,
    ) -> Vec<Record> {
        let ds = match dir {
            Dir::Request => &mut self.req,
            Dir::Response => &mut self.resp,
        };
        let gap = total_len.saturating_sub(data.len() as u64);
        let mut data = data;

        // The tail of a frame whose head was already parsed.
        if ds.skip > 0 {
            let n = ds.skip.min(data.len() as u64);
            data = &data[n as usize..];
            ds.skip -= n;
            finish_pending(ds, &mut self.stats, end_ns);
        }

        if !data.is_empty() {
            ds.compact();
            ds.buf.extend_from_slice(data);
            let end = ds.live_len();
            ds.chunks.push_back(ChunkTime {
                end,
                start_ns,
                end_ns,
            });
        }

        parse_loop::<P>(dir, ds, &mut self.state, &mut self.stats, self.max_buffer);

        if gap > 0 {
            let n = ds.skip.min(gap);
            ds.skip -= n;
            finish_pending(ds, &mut self.stats, end_ns);
            let lost = gap - n;
            if lost > 0 {
                // Bytes vanished in the middle of whatever was buffered: it can't be completed.
                self.stats.bytes_lost += lost;
                P::on_gap(dir, &mut self.state);
                ds.clear();
                ds.pending = None;
                ds.desynced = true;
            }
        }

        while ds.frames.len() > self.max_queued {
            ds.frames.pop_front();
            self.stats.queue_overflows += 1;
        }

        let records = P::stitch(&mut self.req.frames, &mut self.resp.frames, &mut self.state);
        self.stats.records += records.len() as u64;
        records
    }

    /// Whole exchanges were left out of the capture (sampled out) just before the next chunk:
    /// what is held half-done belonged to them and can never complete, and the next chunk
    /// starts a fresh exchange on a message boundary. Only for protocols whose exchanges are
    /// independent (not HTTP/2, whose header compression spans the connection).
    pub fn exchanges_skipped(&mut self) {
        for ds in [&mut self.req, &mut self.resp] {
            self.stats.frames_abandoned += ds.frames.len() as u64 + ds.pending.is_some() as u64;
            ds.clear();
            ds.frames.clear();
            ds.pending = None;
            ds.skip = 0;
            ds.desynced = false;
        }
    }

    /// The connection ended: flush what can still be reported (e.g. requests never answered).
    pub fn close(&mut self) -> Vec<Record> {
        let records = P::on_close(&mut self.req.frames, &mut self.resp.frames, &mut self.state);
        self.stats.records += records.len() as u64;
        records
    }
}

fn finish_pending<F: Timed>(ds: &mut DirState<F>, stats: &mut DriverStats, end_ns: u64) {
    if ds.skip == 0
        && let Some(mut f) = ds.pending.take()
    {
        let start = f.start_ns();
        f.set_timing(start, end_ns);
        ds.frames.push_back(f);
        stats.frames += 1;
    }
}

fn parse_loop<P: Protocol>(
    dir: Dir,
    ds: &mut DirState<P::Frame>,
    state: &mut P::State,
    stats: &mut DriverStats,
    max_buffer: usize,
) {
    // A frame whose tail is still being skipped must finish before anything after it parses.
    while ds.skip == 0 && ds.live_len() > 0 {
        if ds.desynced {
            match P::find_boundary(dir, ds.live(), 0) {
                Some(at) => {
                    ds.drain(at);
                    ds.desynced = false;
                    stats.resyncs += 1;
                    continue;
                }
                None => {
                    ds.clear();
                    break;
                }
            }
        }
        match P::parse(dir, ds.live(), state) {
            Ok(Parsed::Frame {
                mut frame,
                consumed,
            }) => {
                let start = ds.start_ns();
                if consumed <= ds.live_len() {
                    frame.set_timing(start, ds.end_ns_at(consumed));
                    ds.drain(consumed.max(1));
                    ds.frames.push_back(frame);
                    stats.frames += 1;
                } else {
                    frame.set_timing(start, 0);
                    ds.skip = (consumed - ds.live_len()) as u64;
                    ds.pending = Some(frame);
                    ds.clear();
                }
            }
            Ok(Parsed::Skip { consumed }) => {
                if consumed > ds.live_len() {
                    ds.skip = (consumed - ds.live_len()) as u64;
                    ds.clear();
                } else {
                    ds.drain(consumed.max(1));
                }
            }
            Ok(Parsed::Partial) => {
                if ds.live_len() > max_buffer {
                    stats.buffer_overflows += 1;
                    P::on_gap(dir, state);
                    ds.clear();
                    ds.desynced = true;
                }
                break;
            }
            Err(_) => {
                stats.parse_errors += 1;
                match P::find_boundary(dir, ds.live(), 1) {
                    Some(at) if at > 0 => {
                        ds.drain(at);
                        stats.resyncs += 1;
                    }
                    _ => {
                        ds.clear();
                        ds.desynced = true;
                        break;
                    }
                }
            }
        }
    }
}
