//! Pairs PostgreSQL request frames with response frames.
//!
//! Work happens per *group*: a simple Query, or the extended-protocol messages up to and
//! including a Sync. Each group is answered by exactly one ReadyForQuery, so a group is
//! resolved once its closing request and the next ReadyForQuery are both queued: responses are
//! then matched in order (ParseComplete to Parse, BindComplete to Bind, a result to Execute),
//! and after an error the server skips everything up to Sync, and so do we.

use std::collections::VecDeque;
use std::sync::Arc;

use super::types::{Frame, Msg, Request, Response, State};
use crate::record::push_record;
use crate::sql::Analyzed;
use crate::{DbSystem, Detail, ProtocolKind, Record, SqlInfo, drop_answers_ended_before};

fn is_ready(f: &Frame) -> bool {
    matches!(f.msg, Msg::Resp(Response::Ready { .. }))
}

fn ends_group(f: &Frame) -> bool {
    matches!(
        f.msg,
        Msg::Req(Request::Query { .. } | Request::Sync | Request::FunctionCall)
    )
}

pub fn stitch(
    reqs: &mut VecDeque<Frame>,
    resps: &mut VecDeque<Frame>,
    st: &mut State,
) -> Vec<Record> {
    let mut out = Vec::new();
    loop {
        // Frames in the wrong queue never happen (parse sorts by direction); responses with no
        // request are answers to something we never saw (capture started mid-exchange, or the
        // startup exchange). Kept, they would be paired with a later request and give it a
        // response that ended before it started.
        if reqs.is_empty() {
            resps.clear();
            break;
        }
        drop_answers_ended_before(resps, reqs.front().map_or(0, |f| f.start_ns));
        let Some(g) = reqs.iter().position(ends_group) else {
            break;
        };
        let Some(r) = resps.iter().position(is_ready) else {
            break;
        };
        let group: Vec<Frame> = reqs.drain(..=g).collect();
        let answers: Vec<Frame> = resps.drain(..=r).collect();
        resolve(group, answers, st, &mut out);
    }
    out
}

/// Per-statement accumulation of timing and sizes.
#[derive(Default)]
struct Acc {
    req_start: Option<u64>,
    req_bytes: u64,
    resp_start: Option<u64>,
    resp_bytes: u64,
}

impl Acc {
    fn req(&mut self, f: &Frame) {
        self.req_start.get_or_insert(f.start_ns);
        self.req_bytes += f.size;
    }
    fn resp(&mut self, f: &Frame) {
        self.resp_start.get_or_insert(f.start_ns);
        self.resp_bytes += f.size;
    }
}

struct Outcome {
    rows: Option<u64>,
    error_code: Option<String>,
    error_message: Option<String>,
    batch_size: Option<u32>,
}

fn resolve(group: Vec<Frame>, answers: Vec<Frame>, st: &State, out: &mut Vec<Record>) {
    let executes = group
        .iter()
        .filter(|f| matches!(f.msg, Msg::Req(Request::Execute { .. })))
        .count();
    let batch = (executes >= 2).then(|| u32::try_from(executes).unwrap_or(u32::MAX));
    let mut answers: VecDeque<Frame> = answers.into();
    let mut acc = Acc::default();
    let mut aborted = false;
    for f in &group {
        drop_answers_ended_before(&mut answers, f.start_ns);
        acc.req(f);
        let Msg::Req(req) = &f.msg else { continue };
        match req {
            Request::Query { sql } => {
                let mut rows: Option<u64> = None;
                let mut results = 0u32;
                let (mut code, mut message) = (None, None);
                let mut last_end = f.end_ns;
                while let Some(a) = answers.pop_front() {
                    acc.resp(&a);
                    last_end = a.end_ns;
                    match a.msg {
                        Msg::Resp(Response::Command { rows: n, .. }) => {
                            results = results.saturating_add(1);
                            if let Some(n) = n {
                                rows = Some(rows.unwrap_or(0).saturating_add(n));
                            }
                        }
                        Msg::Resp(Response::EmptyQuery) => results = results.saturating_add(1),
                        Msg::Resp(Response::Error {
                            code: c,
                            message: m,
                        }) => {
                            results = results.saturating_add(1);
                            if code.is_none() {
                                (code, message) = (c, m);
                            }
                        }
                        _ => {}
                    }
                }
                let stmts = results.max(sql.statements);
                let outcome = Outcome {
                    rows,
                    error_code: code,
                    error_message: message,
                    batch_size: (stmts >= 2).then_some(stmts),
                };
                push_record(out, record(st, f, &acc, last_end, Some(sql), None, outcome));
                acc = Acc::default();
            }
            Request::Parse { .. } | Request::Bind { .. } | Request::Describe => {
                if aborted {
                    continue;
                }
                let expected = match req {
                    Request::Parse { .. } => Response::ParseComplete,
                    Request::Bind { .. } => Response::BindComplete,
                    _ => Response::Described,
                };
                match answers.front().map(|a| &a.msg) {
                    Some(Msg::Resp(r)) if *r == expected => {
                        if let Some(a) = answers.pop_front() {
                            acc.resp(&a);
                        }
                    }
                    Some(Msg::Resp(Response::Error { .. })) => {
                        let Some(a) = answers.pop_front() else {
                            continue;
                        };
                        acc.resp(&a);
                        let (sql, stmt) = match req {
                            Request::Parse { name, sql } => (Some(sql), Some(name.clone())),
                            Request::Bind { statement, sql } => {
                                (sql.as_ref(), Some(statement.clone()))
                            }
                            _ => (None, None),
                        };
                        let stmt = stmt.filter(|s| !s.is_empty());
                        let end = a.end_ns;
                        let outcome = error_outcome(a, batch);
                        push_record(out, record(st, f, &acc, end, sql, stmt, outcome));
                        acc = Acc::default();
                        aborted = true;
                    }
                    _ => {}
                }
            }
            Request::Execute { statement, sql } => {
                if aborted {
                    continue;
                }
                let Some(a) = answers.pop_front() else {
                    continue;
                };
                acc.resp(&a);
                let end = a.end_ns;
                let outcome = match a.msg {
                    Msg::Resp(Response::Command { rows, .. }) => Outcome {
                        rows,
                        error_code: None,
                        error_message: None,
                        batch_size: batch,
                    },
                    Msg::Resp(Response::Suspended { rows }) => Outcome {
                        rows: Some(rows),
                        error_code: None,
                        error_message: None,
                        batch_size: batch,
                    },
                    Msg::Resp(Response::Error { .. }) => {
                        aborted = true;
                        error_outcome(a, batch)
                    }
                    _ => Outcome {
                        rows: None,
                        error_code: None,
                        error_message: None,
                        batch_size: batch,
                    },
                };
                push_record(
                    out,
                    record(st, f, &acc, end, sql.as_ref(), statement.clone(), outcome),
                );
                acc = Acc::default();
            }
            Request::Sync | Request::FunctionCall => {}
        }
    }
}

fn error_outcome(a: Frame, batch: Option<u32>) -> Outcome {
    let (error_code, error_message) = match a.msg {
        Msg::Resp(Response::Error { code, message }) => (code, message),
        _ => (None, None),
    };
    Outcome {
        rows: None,
        error_code,
        error_message,
        batch_size: batch,
    }
}

fn record(
    st: &State,
    req: &Frame,
    acc: &Acc,
    end_ns: u64,
    sql: Option<&Arc<Analyzed>>,
    statement: Option<String>,
    o: Outcome,
) -> Record {
    Record {
        protocol: ProtocolKind::Postgres,
        start_ns: acc.req_start.unwrap_or(req.start_ns),
        end_ns,
        request_end_ns: req.end_ns,
        response_start_ns: acc.resp_start.unwrap_or(0),
        request_bytes: acc.req_bytes,
        response_bytes: acc.resp_bytes,
        detail: Detail::Sql(Box::new(SqlInfo {
            system: DbSystem::Postgresql,
            database: st.database.clone(),
            user: st.user.clone(),
            application_name: st.application_name.clone(),
            query_sanitized: sql.map(|s| s.sanitized.clone()),
            query_raw: sql.filter(|_| st.keep_raw_query).map(|s| s.raw.to_string()),
            operation: sql.and_then(|s| s.operation.clone()),
            collection: sql.and_then(|s| s.collection.clone()),
            rows: o.rows,
            error_code: o.error_code,
            error_message: o.error_message,
            batch_size: o.batch_size,
            statement,
        })),
    }
}

/// Requests left when the connection closes get a record without a response.
pub fn on_close(
    reqs: &mut VecDeque<Frame>,
    resps: &mut VecDeque<Frame>,
    st: &State,
) -> Vec<Record> {
    let mut out = Vec::new();
    for f in reqs.drain(..) {
        let (sql, statement) = match &f.msg {
            Msg::Req(Request::Query { sql }) => (Some(sql), None),
            Msg::Req(Request::Execute { statement, sql }) => (sql.as_ref(), statement.clone()),
            _ => continue,
        };
        let mut acc = Acc::default();
        acc.req(&f);
        let o = Outcome {
            rows: None,
            error_code: None,
            error_message: None,
            batch_size: None,
        };
        push_record(&mut out, record(st, &f, &acc, f.end_ns, sql, statement, o));
    }
    resps.clear();
    out
}
