//! Pairs commands with replies in order, skipping what is not a reply: RESP3 pushes, pub/sub
//! messages, and the extra confirmations of a multi-channel SUBSCRIBE. Tracks SELECT,
//! MULTI/EXEC and subscription state.

use std::collections::VecDeque;

use super::types::{Command, Frame, Message, Reply, State};
use crate::record::push_record;
use crate::{Detail, ProtocolKind, Record, RedisInfo};

const SUB_FAMILY: &[&str] = &[
    "subscribe",
    "psubscribe",
    "ssubscribe",
    "unsubscribe",
    "punsubscribe",
    "sunsubscribe",
];
const MESSAGES: &[&str] = &["message", "pmessage", "smessage"];

enum Action {
    Pair,
    Drop,
}

fn front_command(reqs: &VecDeque<Frame>) -> Option<&Command> {
    match reqs.front().map(|f| &f.msg) {
        Some(Message::Command(c)) => Some(c),
        _ => None,
    }
}

/// Decides whether the front reply answers the front command.
fn classify(resp: &Frame, reqs: &VecDeque<Frame>, st: &mut State) -> Action {
    let (first, third, push) = match &resp.msg {
        Message::Reply(Reply::Push { first, third }) => (first.as_deref(), *third, true),
        Message::Reply(Reply::Array { first, third }) => (first.as_deref(), *third, false),
        _ => return Action::Pair,
    };
    let cmd = front_command(reqs);
    let is_confirm = first.is_some_and(|f| SUB_FAMILY.contains(&f));
    let cmd_is_sub = cmd.is_some_and(|c| {
        SUB_FAMILY
            .iter()
            .any(|s| s.eq_ignore_ascii_case(&c.command))
    });
    if is_confirm && (push || st.subscribed || cmd_is_sub || st.extra_confirms > 0) {
        if let Some(n) = third {
            st.subscribed = n > 0;
        }
        if st.extra_confirms > 0 {
            st.extra_confirms -= 1;
            return Action::Drop;
        }
        let matches = match (first, cmd) {
            (Some(f), Some(c)) => f.eq_ignore_ascii_case(&c.command),
            _ => false,
        };
        if matches {
            let args = cmd.map_or(0, |c| c.args);
            st.extra_confirms = args.saturating_sub(1);
            return Action::Pair;
        }
        return Action::Drop;
    }
    if push {
        return Action::Drop;
    }
    if st.subscribed && first.is_some_and(|f| MESSAGES.contains(&f)) {
        return Action::Drop;
    }
    Action::Pair
}

pub fn stitch(
    reqs: &mut VecDeque<Frame>,
    resps: &mut VecDeque<Frame>,
    st: &mut State,
) -> Vec<Record> {
    let mut out = Vec::new();
    while let Some(resp) = resps.front() {
        if let Action::Drop = classify(resp, reqs, st) {
            resps.pop_front();
            continue;
        }
        if reqs.is_empty() {
            if st.outstanding_requests == 0 {
                // A reply to a command the capture never saw.
                resps.pop_front();
                continue;
            }
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
        if let Some(r) = record(req, Some(resp), st) {
            push_record(&mut out, r);
        }
    }
    out
}

pub fn on_close(
    reqs: &mut VecDeque<Frame>,
    resps: &mut VecDeque<Frame>,
    st: &mut State,
) -> Vec<Record> {
    let mut out = stitch(reqs, resps, st);
    while let Some(req) = reqs.pop_front() {
        if let Some(r) = record(req, None, st) {
            push_record(&mut out, r);
        }
    }
    resps.clear();
    st.outstanding_requests = 0;
    out
}

/// Applies what the exchange does to the connection, then builds its record.
fn record(req: Frame, resp: Option<Frame>, st: &mut State) -> Option<Record> {
    let Message::Command(cmd) = req.msg else {
        return None;
    };
    let reply = resp.as_ref().and_then(|r| match &r.msg {
        Message::Reply(rep) => Some(rep),
        Message::Command(_) => None,
    });
    let ok = matches!(reply, Some(Reply::Status(s)) if s == "OK");
    let mut batch_size = None;
    match cmd.command.as_str() {
        "SELECT" if ok => st.db_index = cmd.select_db,
        "RESET" => {
            st.db_index = Some(0);
            st.in_multi = false;
            st.subscribed = false;
            st.extra_confirms = 0;
        }
        "MULTI" if ok => {
            st.in_multi = true;
            st.queued = 0;
        }
        "EXEC" => {
            if st.in_multi {
                batch_size = Some(st.queued);
            }
            st.in_multi = false;
            st.queued = 0;
        }
        "DISCARD" => {
            st.in_multi = false;
            st.queued = 0;
        }
        _ if st.in_multi && matches!(reply, Some(Reply::Status(s)) if s == "QUEUED") => {
            st.queued = st.queued.saturating_add(1);
        }
        _ => {}
    }
    let (error_prefix, error_message) = match reply {
        Some(Reply::Error { prefix, message }) => (Some(prefix.clone()), Some(message.clone())),
        _ => (None, None),
    };
    let info = RedisInfo {
        command: cmd.command,
        key: cmd.key,
        db_index: st.db_index,
        error_prefix,
        error_message,
        batch_size,
    };
    let (end_ns, response_start_ns, response_bytes) = match &resp {
        Some(r) => (r.end_ns, r.start_ns, r.bytes),
        None => (req.end_ns, 0, 0),
    };
    Some(Record {
        protocol: ProtocolKind::Redis,
        start_ns: req.start_ns,
        end_ns,
        request_end_ns: req.end_ns,
        response_start_ns,
        request_bytes: req.bytes,
        response_bytes,
        detail: Detail::Redis(Box::new(info)),
    })
}
