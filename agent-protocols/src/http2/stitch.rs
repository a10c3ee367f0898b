//! Per-stream assembly: request and response frames of interleaved streams are paired by stream
//! id (not by order) and a [`Record`] is emitted when the response ends (or the stream is reset).

use std::collections::VecDeque;

use super::state::State;
use super::types::*;
use crate::record::push_record;
use crate::{Detail, GrpcInfo, ProtocolKind, Record};

/// One direction of one stream.
#[derive(Debug, Default)]
pub struct Half {
    started: bool,
    start_ns: u64,
    end_ns: u64,
    bytes: u64,
    messages: u32,
    /// First (non-informational) header block.
    headers: Option<Box<HeaderFields>>,
    /// Trailers.
    trailers: Option<Box<HeaderFields>>,
    blocks: u32,
    /// DATA seen, and all of it valid gRPC framing.
    data: bool,
    framing_ok: bool,
    /// A header block could not be (fully) decoded.
    unknown: bool,
    done: bool,
}

impl Half {
    fn add(&mut self, f: &Frame) {
        if !self.started {
            self.started = true;
            self.start_ns = f.start_ns;
        }
        self.end_ns = self.end_ns.max(f.end_ns);
        self.bytes = self.bytes.saturating_add(f.wire_len);
        match &f.kind {
            FrameKind::Headers { fields, end_stream } => {
                self.unknown |= fields.as_ref().is_none_or(|h| h.unknown);
                let informational = fields
                    .as_ref()
                    .and_then(|h| h.status)
                    .is_some_and(|s| (100..200).contains(&s));
                if !informational {
                    if self.blocks == 0 {
                        self.headers = fields.clone();
                    } else {
                        self.trailers = fields.clone();
                    }
                    self.blocks += 1;
                }
                self.done |= *end_stream;
            }
            FrameKind::Data {
                messages,
                grpc_framed,
                end_stream,
                ..
            } => {
                self.framing_ok = *grpc_framed && (self.framing_ok || !self.data);
                self.data = true;
                self.messages = self.messages.saturating_add(*messages);
                self.done |= *end_stream;
            }
            FrameKind::RstStream { .. } | FrameKind::GoAway { .. } => {}
        }
    }
}

#[derive(Debug, Default)]
pub struct StreamAsm {
    req: Half,
    resp: Half,
}

pub fn stitch(
    reqs: &mut VecDeque<Frame>,
    resps: &mut VecDeque<Frame>,
    st: &mut State,
) -> Vec<Record> {
    let mut out = Vec::new();
    for (is_req, f) in reqs
        .drain(..)
        .map(|f| (true, f))
        .chain(resps.drain(..).map(|f| (false, f)))
    {
        on_frame(is_req, f, st, &mut out);
    }
    out
}

fn on_frame(is_req: bool, f: Frame, st: &mut State, out: &mut Vec<Record>) {
    let id = f.stream_id;
    if let FrameKind::GoAway { last_stream_id, .. } = f.kind {
        // Streams above last_stream_id were not (and will not be) processed.
        let gone = st.streams.split_off(&last_stream_id.saturating_add(1));
        let grpc_conn = st.grpc_seen;
        out.extend(
            gone.into_iter()
                .map(|(id, s)| record(id, s, true, grpc_conn)),
        );
        return;
    }
    // Server-pushed (even) streams are not traced.
    if id.is_multiple_of(2) {
        return;
    }
    if !st.streams.contains_key(&id) {
        // A stream starts with a header block; anything else belongs to a stream that began
        // before the capture or already ended.
        if !matches!(f.kind, FrameKind::Headers { .. }) {
            return;
        }
        // A response may open an entry only for a stream the client opened before the capture
        // began; otherwise it belongs to a stream already reported (reset, evicted).
        if is_req {
            st.first_request_stream.get_or_insert(id);
        } else if st.first_request_stream.is_some_and(|first| id >= first) {
            return;
        }
        if st.streams.len() >= MAX_OPEN_STREAMS {
            st.streams.pop_first();
            st.stats.streams_dropped += 1;
        }
    }
    if let FrameKind::Headers {
        fields: Some(h), ..
    } = &f.kind
    {
        st.grpc_seen |= is_grpc_type(h.content_type.as_deref());
    }
    let s = st.streams.entry(id).or_default();
    let reset = matches!(f.kind, FrameKind::RstStream { .. });
    if is_req {
        s.req.add(&f);
    } else {
        s.resp.add(&f);
    }
    if (reset || s.resp.done)
        && let Some(s) = st.streams.remove(&id)
    {
        push_record(out, record(id, s, reset, st.grpc_seen));
    }
}

/// The connection ended: streams still open are reported with what was seen.
pub fn close(st: &mut State) -> Vec<Record> {
    let grpc_conn = st.grpc_seen;
    std::mem::take(&mut st.streams)
        .into_iter()
        .filter(|(_, s)| s.req.started)
        .map(|(id, s)| record(id, s, false, grpc_conn))
        .collect()
}

fn is_grpc_type(ct: Option<&str>) -> bool {
    ct.is_some_and(|c| c.starts_with("application/grpc"))
}

/// `grpc_conn`: an earlier stream of this connection was gRPC (decides for streams whose
/// content type could not be decoded).
fn record(stream_id: u32, s: StreamAsm, reset: bool, grpc_conn: bool) -> Record {
    let StreamAsm { req, resp } = s;
    let rq = req.headers.as_deref();
    let rs = resp.headers.as_deref();
    let tr = resp.trailers.as_deref();
    let ct_known = rq
        .and_then(|h| h.content_type.as_deref())
        .or(rs.and_then(|h| h.content_type.as_deref()));
    let grpc_status = tr
        .and_then(|h| h.grpc_status)
        .or(rs.and_then(|h| h.grpc_status));
    let grpc = match ct_known {
        Some(ct) => is_grpc_type(Some(ct)),
        // Content type not decoded: gRPC's own markers decide, or the request body being
        // gRPC length-prefixed messages (and the response body too, when there is one).
        None => {
            grpc_conn
                || grpc_status.is_some()
                || rq.is_some_and(|h| h.te_trailers)
                || (req.data && req.framing_ok && (!resp.data || resp.framing_ok))
        }
    };
    let raw_path = rq.and_then(|h| h.path.clone());
    let (path, service, method) = match raw_path {
        Some(p) if grpc => {
            let p = p.strip_prefix('/').map(str::to_owned).unwrap_or(p);
            let split = p
                .rsplit_once('/')
                .map(|(s, m)| (s.to_owned(), m.to_owned()));
            let (service, method) = split.unzip();
            (Some(p), service, method)
        }
        other => (other, None, None),
    };
    let info = GrpcInfo {
        path,
        service,
        method,
        authority: rq.and_then(|h| h.authority.clone()),
        stream_id,
        http_status: rs.and_then(|h| h.status),
        grpc_status: if grpc { grpc_status } else { None },
        grpc_message: if grpc {
            tr.and_then(|h| h.grpc_message.clone())
                .or(rs.and_then(|h| h.grpc_message.clone()))
        } else {
            None
        },
        request_messages: if grpc { req.messages } else { 0 },
        response_messages: if grpc { resp.messages } else { 0 },
        traceparent: rq.and_then(|h| h.traceparent.clone()),
        tracestate: rq.and_then(|h| h.tracestate.clone()),
        plain_http2: !grpc,
        http_method: rq.and_then(|h| h.method.clone()),
        headers_unknown: req.unknown || resp.unknown || rq.is_none(),
        reset,
    };
    // A response can be seen first when the capture began mid-stream.
    let start_ns = match (req.started, resp.started) {
        (true, true) => req.start_ns.min(resp.start_ns),
        (true, false) => req.start_ns,
        _ => resp.start_ns,
    };
    let request_end_ns = if req.started { req.end_ns } else { 0 };
    Record {
        protocol: ProtocolKind::Http2,
        start_ns,
        end_ns: if resp.started {
            resp.end_ns
        } else {
            req.end_ns
        },
        request_end_ns,
        response_start_ns: if resp.started { resp.start_ns } else { 0 },
        request_bytes: req.bytes,
        response_bytes: resp.bytes,
        detail: Detail::Grpc(Box::new(info)),
    }
}
