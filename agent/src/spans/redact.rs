//! Query-string redaction for `url.query` / `url.full`.

use std::borrow::Cow;

/// Parameter names whose values are replaced by `REDACTED` (matched case-insensitively as a
/// substring of the key, so `access_token`, `X-Amz-Signature`, `api_key` are all caught).
const SENSITIVE: &[&str] = &[
    "token",
    "password",
    "passwd",
    "pwd",
    "key",
    "secret",
    "signature",
    "sig",
    "auth",
    "credential",
    "session",
];

fn is_sensitive(key: &str) -> bool {
    // Case-insensitive substring test without lower-casing into a new string per key.
    let k = key.as_bytes();
    SENSITIVE.iter().any(|s| {
        k.windows(s.len())
            .any(|w| w.eq_ignore_ascii_case(s.as_bytes()))
    })
}

/// Redact the values of sensitive parameters in a query string (without the leading `?`).
/// Borrowed when nothing needed redacting (the common case).
pub fn redact_query(query: &str) -> Cow<'_, str> {
    let needs = query
        .split('&')
        .any(|pair| pair.split_once('=').is_some_and(|(k, _)| is_sensitive(k)));
    if !needs {
        return Cow::Borrowed(query);
    }
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((k, _)) if is_sensitive(k) => {
                out.push_str(k);
                out.push_str("=REDACTED");
            }
            _ => out.push_str(pair),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_only_sensitive_values() {
        assert_eq!(
            redact_query("q=shoes&access_token=abc&page=2&X-Amz-Signature=zz&password=p"),
            "q=shoes&access_token=REDACTED&page=2&X-Amz-Signature=REDACTED&password=REDACTED"
        );
        assert_eq!(redact_query("flag&api_key=1"), "flag&api_key=REDACTED");
        assert_eq!(redact_query(""), "");
        assert_eq!(redact_query("a=1"), "a=1");
    }
}
