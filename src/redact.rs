//! Keeping credentials out of events, logs and replies: one header deny-list
//! applied by every source before the envelope is built (so a credential never
//! reaches a template, an outbox file or a dead-letter record), and URLs
//! shown without their user info.

use std::sync::OnceLock;

/// Request/message headers that carry credentials (lower case).
pub const CREDENTIAL_HEADERS: [&str; 9] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-gitlab-token",
    "x-api-key",
    "x-auth-token",
    "x-forwarded-access-token",
    "x-amz-security-token",
];

/// Headers added to the deny-list by `redactHeaders:` in `tripline.yaml`.
static EXTRA: OnceLock<Vec<String>> = OnceLock::new();

/// Adds `headers` to the deny-list, once, at start (later calls are ignored:
/// the list must not change under running sources).
pub fn configure(headers: &[String]) {
    let _ = EXTRA.set(headers.iter().map(|h| h.to_ascii_lowercase()).collect());
}

/// Whether a header of this name carries a credential (any case).
pub fn is_credential_header(name: &str) -> bool {
    CREDENTIAL_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
        || EXTRA
            .get()
            .is_some_and(|extra| extra.iter().any(|h| h.eq_ignore_ascii_case(name)))
}

/// Whether a URL carries credentials in its user info (`nats://u:p@h`).
pub fn has_user_info(u: &str) -> bool {
    url(u) != u
}

/// `scheme://user:password@host/…` → `scheme://***@host/…`; anything else
/// unchanged. For URLs shown in logs and on `/readyz`.
pub fn url(u: &str) -> String {
    let Some((scheme, rest)) = u.split_once("://") else {
        return u.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => u.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_in_any_case() {
        for h in [
            "Authorization",
            "PROXY-AUTHORIZATION",
            "x-api-key",
            "X-Gitlab-Token",
            "Cookie",
        ] {
            assert!(is_credential_header(h), "{h}");
        }
        for h in [
            "x-github-event",
            "content-type",
            "x-hub-signature-256",
            "nats-msg-id",
        ] {
            assert!(!is_credential_header(h), "{h}");
        }
    }

    #[test]
    fn urls_lose_their_user_info() {
        assert_eq!(url("nats://u:p@h:4222"), "nats://***@h:4222");
        assert_eq!(url("nats://token@h:4222/x@y"), "nats://***@h:4222/x@y");
        assert_eq!(url("nats://h:4222"), "nats://h:4222");
        assert_eq!(url("h:4222"), "h:4222");
        assert!(has_user_info("nats://u:p@h:4222"));
        assert!(!has_user_info("nats://h:4222"));
    }
}
