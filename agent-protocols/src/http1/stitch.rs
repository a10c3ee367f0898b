//! Pairs HTTP/1 requests with responses in order (keep-alive and pipelining are both strictly
//! ordered) and builds records.

use std::collections::VecDeque;

use compact_str::CompactString;

use super::types::{Body, Frame, Message, State};
use crate::record::push_record;
use crate::{Detail, HttpInfo, ProtocolKind, Record};

/// Merges a streamed chunked body's end into its head. Returns whether the front frame is a
/// complete message ready to pair. Stray `BodyEnd`s (head lost) are dropped.
fn settle_front(q: &mut VecDeque<Frame>, closing: bool, st: &State) -> bool {
    loop {
        let Some(front) = q.front_mut() else {
            return false;
        };
        if front.msg == Message::BodyEnd {
            q.pop_front();
            continue;
        }
        match front.body {
            Body::Done { .. } => return true,
            Body::UntilClose => {
                if closing {
                    let n = st.close_body.unwrap_or(0);
                    front.body = Body::Done { wire: n, data: n };
                }
                return closing;
            }
            Body::Chunked => {}
        }
        match q.get(1).map(|f| (&f.msg, f.body, f.end_ns)) {
            Some((Message::BodyEnd, body, end_ns)) => {
                if let Some(f) = q.front_mut() {
                    f.body = body;
                    f.end_ns = end_ns;
                }
                q.remove(1);
                return true;
            }
            // Framing was lost before the last chunk: keep what the head told.
            Some(_) => {
                if let Some(f) = q.front_mut() {
                    f.body = Body::Done { wire: 0, data: 0 };
                }
                return true;
            }
            None if closing => {
                if let Some(f) = q.front_mut() {
                    f.body = Body::Done { wire: 0, data: 0 };
                }
                return true;
            }
            None => return false,
        }
    }
}

pub fn stitch(
    reqs: &mut VecDeque<Frame>,
    resps: &mut VecDeque<Frame>,
    st: &mut State,
) -> Vec<Record> {
    pair(reqs, resps, st, false)
}

pub fn on_close(
    reqs: &mut VecDeque<Frame>,
    resps: &mut VecDeque<Frame>,
    st: &mut State,
) -> Vec<Record> {
    let mut out = pair(reqs, resps, st, true);
    // Requests never answered.
    while settle_front(reqs, true, st) {
        if let Some(req) = reqs.pop_front()
            && let Some(r) = record(req, None)
        {
            push_record(&mut out, r);
        }
    }
    reqs.clear();
    resps.clear();
    st.close_body = None;
    st.outstanding_requests = 0;
    out
}

fn pair(
    reqs: &mut VecDeque<Frame>,
    resps: &mut VecDeque<Frame>,
    st: &mut State,
    closing: bool,
) -> Vec<Record> {
    let mut out = Vec::new();
    loop {
        if !settle_front(resps, closing, st) {
            break;
        }
        if reqs.is_empty() && st.outstanding_requests == 0 {
            // A response to a request the capture never saw.
            resps.pop_front();
            continue;
        }
        if !settle_front(reqs, closing, st) {
            break;
        }
        if let (Some(q), Some(r)) = (reqs.front(), resps.front())
            && r.end_ns < q.start_ns
        {
            // Finished before this request began: it answers one the capture lost.
            resps.pop_front();
            st.outstanding_requests = reqs.len() as u64;
            continue;
        }
        let (Some(req), Some(resp)) = (reqs.pop_front(), resps.pop_front()) else {
            break;
        };
        st.outstanding_requests = st.outstanding_requests.saturating_sub(1);
        if let Some(r) = record(req, Some(resp)) {
            push_record(&mut out, r);
        }
    }
    out
}

/// Wire size of a whole message, and its payload size when it had a body.
fn body_wire(f: &Frame) -> (u64, Option<u64>) {
    match f.body {
        Body::Done { wire, data } if wire > 0 => (f.head_bytes.saturating_add(wire), Some(data)),
        _ => (f.head_bytes, None),
    }
}

fn record(req: Frame, resp: Option<Frame>) -> Option<Record> {
    let (request_bytes, req_body) = body_wire(&req);
    let (start_ns, end_ns) = (req.start_ns, req.end_ns);
    let Message::Request(h) = req.msg else {
        return None;
    };
    let h = *h;
    let request_content_length = h.content_length.or(req_body);
    let mut info = HttpInfo {
        method: h.method,
        path: h.path,
        query: h.query,
        version: CompactString::const_new(h.version),
        status: None,
        host: h.host,
        user_agent: h.user_agent,
        content_type: h.content_type,
        request_content_length,
        response_content_length: None,
        traceparent: h.traceparent,
        tracestate: h.tracestate,
        b3: h.b3,
        extra_headers: h.extra_headers,
        upgraded: false,
    };
    let (mut rec_end_ns, mut response_start_ns, mut response_bytes) = (end_ns, 0, 0);
    if let Some(resp) = resp {
        let (wire_bytes, resp_body) = body_wire(&resp);
        if let Message::Response(r) = &resp.msg {
            info.status = Some(r.status);
            info.upgraded = r.upgraded;
            info.response_content_length = r.content_length.or(resp_body);
        }
        rec_end_ns = resp.end_ns;
        response_start_ns = resp.start_ns;
        response_bytes = wire_bytes;
    }
    Some(Record {
        protocol: ProtocolKind::Http1,
        start_ns,
        end_ns: rec_end_ns,
        request_end_ns: end_ns,
        response_start_ns,
        request_bytes,
        response_bytes,
        detail: Detail::Http(Box::new(info)),
    })
}
