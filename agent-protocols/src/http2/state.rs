//! Per-connection state: one HPACK decoder and one set of gRPC message counters per direction
//! (parse side), and the streams being assembled (stitch side).

use std::collections::{BTreeMap, HashMap};

use super::grpc::MessageCounter;
use super::hpack::HpackDir;
use super::stitch::StreamAsm;
use super::types::*;
use crate::Dir;

/// What one direction's parser keeps between frames.
#[derive(Debug)]
pub struct DirState {
    pub hpack: HpackDir,
    pub counters: HashMap<u32, MessageCounter>,
    /// Largest frame the receiver of this direction accepts (its SETTINGS_MAX_FRAME_SIZE).
    pub max_frame: usize,
}

impl Default for DirState {
    fn default() -> Self {
        Self {
            hpack: HpackDir::default(),
            counters: HashMap::new(),
            // Until SETTINGS are seen (capture may start late) accept anything legal.
            max_frame: MAX_FRAME_LEN,
        }
    }
}

/// Counters of what the HTTP/2 parser dropped or could not decode.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Http2Stats {
    /// Streams dropped because [`MAX_OPEN_STREAMS`] were open.
    pub streams_dropped: u64,
    /// DATA frames whose gRPC messages were not counted because too many streams were open.
    pub counters_dropped: u64,
    /// Header blocks skipped (too large, orphan CONTINUATION, interrupted sequence).
    pub header_blocks_skipped: u64,
    /// Header blocks that could not be decoded (corrupt).
    pub header_blocks_corrupt: u64,
    /// Client connection prefaces seen.
    pub prefaces: u64,
}

#[derive(Debug, Default)]
pub struct State {
    /// Boxed: keeps `Stream`'s variants close in size.
    pub req: Box<DirState>,
    pub resp: Box<DirState>,
    pub streams: BTreeMap<u32, StreamAsm>,
    /// The first stream the capture saw the client open: streams below it began earlier.
    pub first_request_stream: Option<u32>,
    /// A stream of this connection was gRPC (by its content type or status).
    pub grpc_seen: bool,
    pub stats: Http2Stats,
}

impl State {
    pub fn dir_mut(&mut self, dir: Dir) -> &mut DirState {
        match dir {
            Dir::Request => &mut self.req,
            Dir::Response => &mut self.resp,
        }
    }

    pub fn other_mut(&mut self, dir: Dir) -> &mut DirState {
        match dir {
            Dir::Request => &mut self.resp,
            Dir::Response => &mut self.req,
        }
    }

    /// Bytes of `dir` were lost: header blocks may have been missed, DATA payload unseen.
    pub fn gap(&mut self, dir: Dir) {
        let d = self.dir_mut(dir);
        d.hpack.restart();
        for c in d.counters.values_mut() {
            c.skip(u64::MAX);
        }
    }
}
