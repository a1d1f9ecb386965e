//! Keeping credentials out of events, logs and replies: one header deny-list
//! applied by every source before the envelope is built (so a credential never
//! reaches a template, an outbox file or a dead-letter record), and URLs
//! shown without their user info.

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

/// Whether a header of this name carries a credential (any case).
pub fn is_credential_header(name: &str) -> bool {
    CREDENTIAL_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
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
    }
}
