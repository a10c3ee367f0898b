//! Query-string redaction for `url.query` / `url.full`.

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
    let k = key.to_ascii_lowercase();
    SENSITIVE.iter().any(|s| k.contains(s))
}

/// Redact the values of sensitive parameters in a query string (without the leading `?`).
pub fn redact_query(query: &str) -> String {
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
    out
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
