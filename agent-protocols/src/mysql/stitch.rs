//! Pairs MySQL commands with their responses, strictly in order. A response is one frame (OK,
//! ERR, PREPARE_OK) or a result set (start + end frames); `more results` flags chain several
//! (multi-statement queries, CALL) into one record.

use std::collections::VecDeque;
use std::sync::Arc;

use super::types::{Frame, Msg, Request, Response, State};
use crate::record::push_record;
use crate::sql::Analyzed;
use crate::{Detail, ProtocolKind, Record, SqlInfo, drop_answers_ended_before};

/// How many response frames answer the command at the front, if all have arrived.
fn response_len(resps: &VecDeque<Frame>) -> Option<usize> {
    let mut i = 0;
    loop {
        match &resps.get(i)?.msg {
            Msg::Resp(Response::Ok { more, .. }) => {
                i += 1;
                if !more {
                    return Some(i);
                }
            }
            Msg::Resp(Response::ResultStart) => match &resps.get(i + 1)?.msg {
                Msg::Resp(Response::ResultEnd { more, .. }) => {
                    i += 2;
                    if !more {
                        return Some(i);
                    }
                }
                // An error in the middle of the rows ends the response.
                Msg::Resp(Response::Err { .. }) => return Some(i + 2),
                // A new result start without an end: the end was lost; close here.
                _ => return Some(i + 1),
            },
            Msg::Resp(Response::Err { .. } | Response::PrepareOk { .. }) => return Some(i + 1),
            Msg::Resp(Response::ResultEnd { .. }) | Msg::Req(_) => return Some(i + 1),
        }
    }
}

pub fn stitch(
    reqs: &mut VecDeque<Frame>,
    resps: &mut VecDeque<Frame>,
    st: &mut State,
) -> Vec<Record> {
    let mut out = Vec::new();
    loop {
        if reqs.is_empty() {
            // Answers to commands we never saw.
            resps.clear();
            break;
        }
        drop_answers_ended_before(resps, reqs.front().map_or(0, |f| f.start_ns));
        let Some(n) = response_len(resps) else { break };
        let (Some(req), answers) = (reqs.pop_front(), resps.drain(..n).collect::<Vec<_>>()) else {
            break;
        };
        push_record(&mut out, record(st, &req, &answers));
    }
    out
}

fn record(st: &State, req: &Frame, answers: &[Frame]) -> Record {
    let mut rows: Option<u64> = None;
    let (mut error_code, mut error_message) = (None, None);
    let mut results = 0u32;
    let mut prepared_id = None;
    for a in answers {
        match &a.msg {
            Msg::Resp(Response::Ok { affected_rows, .. }) => {
                results = results.saturating_add(1);
                rows = Some(rows.unwrap_or(0).saturating_add(*affected_rows));
            }
            Msg::Resp(Response::ResultEnd { rows: n, .. }) => {
                results = results.saturating_add(1);
                rows = Some(rows.unwrap_or(0).saturating_add(*n));
            }
            Msg::Resp(Response::Err {
                code,
                sqlstate: _,
                message,
            }) => {
                results = results.saturating_add(1);
                if error_code.is_none() {
                    error_code = Some(code.to_string());
                    error_message = Some(message.clone());
                }
            }
            Msg::Resp(Response::PrepareOk { stmt_id }) => prepared_id = Some(*stmt_id),
            _ => {}
        }
    }
    let (sql, operation, statement): (Option<&Arc<Analyzed>>, Option<Arc<str>>, Option<String>) =
        match &req.msg {
            Msg::Req(Request::Query { sql }) => (Some(sql), sql.operation.clone(), None),
            Msg::Req(Request::Prepare { sql }) => (
                Some(sql),
                Some("PREPARE".into()),
                prepared_id.map(|i| i.to_string()),
            ),
            Msg::Req(Request::Execute { stmt_id, sql }) => (
                sql.as_ref(),
                sql.as_ref().and_then(|s| s.operation.clone()),
                Some(stmt_id.to_string()),
            ),
            Msg::Req(Request::Simple { operation }) => (None, Some((*operation).into()), None),
            Msg::Resp(_) => (None, None, None),
        };
    let batch = sql.map_or(0, |s| s.statements).max(results);
    let first = answers.first();
    let last = answers.last();
    Record {
        protocol: ProtocolKind::Mysql,
        start_ns: req.start_ns,
        end_ns: last.map_or(req.end_ns, |f| f.end_ns),
        request_end_ns: req.end_ns,
        response_start_ns: first.map_or(0, |f| f.start_ns),
        request_bytes: req.size,
        response_bytes: answers.iter().map(|f| f.size).sum(),
        detail: Detail::Sql(Box::new(SqlInfo {
            system: st.system(),
            database: st.database.clone(),
            user: st.user.clone(),
            application_name: st.application_name.clone(),
            query_sanitized: sql.map(|s| s.sanitized.clone()),
            query_raw: sql.filter(|_| st.keep_raw_query).map(|s| s.raw.to_string()),
            operation,
            collection: sql.and_then(|s| s.collection.clone()),
            rows: if matches!(req.msg, Msg::Req(Request::Prepare { .. })) {
                None
            } else {
                rows
            },
            error_code,
            error_message,
            batch_size: (batch >= 2 && matches!(req.msg, Msg::Req(Request::Query { .. })))
                .then_some(batch),
            statement,
        })),
    }
}

/// Commands left unanswered when the connection closes still get a record.
pub fn on_close(
    reqs: &mut VecDeque<Frame>,
    resps: &mut VecDeque<Frame>,
    st: &State,
) -> Vec<Record> {
    let out = reqs.drain(..).map(|r| record(st, &r, &[])).collect();
    resps.clear();
    out
}
