//! Who sent a webhook: GitHub's HMAC signature, GitLab's token, a generic
//! HMAC (configurable header, algorithm, encoding, replay window) or a bearer
//! token. [`Auth::verify`] answers which check failed and why, never echoing
//! a secret; comparisons are constant-time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// The HMAC digest of a generic signature.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Sha1,
    #[default]
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
/// How a generic signature is written.
pub enum Encoding {
    #[default]
    Hex,
    Base64,
}

/// How a request proves where it came from.
pub enum Auth {
    None,
    GithubHmac(Vec<Vec<u8>>),
    GitlabToken(Vec<Vec<u8>>),
    Hmac {
        header: String,
        algorithm: Algorithm,
        prefix: String,
        encoding: Encoding,
        secrets: Vec<Vec<u8>>,
        timestamp: Option<(String, Duration)>,
    },
    Bearer(Vec<Vec<u8>>),
}

/// A failed authentication check: which check, and what went wrong.
#[derive(Debug, PartialEq)]
pub struct AuthFailure {
    pub check: String,
    pub error: String,
}

fn fail(check: &str, error: impl Into<String>) -> Result<(), AuthFailure> {
    Err(AuthFailure {
        check: check.to_string(),
        error: error.into(),
    })
}

pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn hmac_matches(algorithm: Algorithm, key: &[u8], parts: &[&[u8]], sig: &[u8]) -> bool {
    macro_rules! check {
        ($d:ty) => {{
            let mut mac = <Hmac<$d>>::new_from_slice(key).expect("HMAC takes any key length");
            for p in parts {
                mac.update(p);
            }
            mac.verify_slice(sig).is_ok()
        }};
    }
    match algorithm {
        Algorithm::Sha1 => check!(sha1::Sha1),
        Algorithm::Sha256 => check!(sha2::Sha256),
        Algorithm::Sha512 => check!(sha2::Sha512),
    }
}

fn ct_eq_any(given: &[u8], secrets: &[Vec<u8>]) -> bool {
    // Check every secret (no early exit) so timing does not tell which matched.
    secrets
        .iter()
        .fold(false, |acc, s| acc | bool::from(given.ct_eq(s)))
}

impl Auth {
    /// Verifies the request. Error messages never echo a secret.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), AuthFailure> {
        match self {
            Auth::None => Ok(()),
            Auth::GithubHmac(secrets) => {
                const H: &str = "X-Hub-Signature-256";
                let Some(v) = header_str(headers, H) else {
                    return fail(
                        H,
                        "missing X-Hub-Signature-256 header (is the webhook secret set in GitHub?)",
                    );
                };
                let Some(sig) = v.strip_prefix("sha256=").and_then(|h| hex::decode(h).ok()) else {
                    return fail(H, "malformed signature: expected sha256=<hex>");
                };
                if secrets
                    .iter()
                    .any(|k| hmac_matches(Algorithm::Sha256, k, &[body], &sig))
                {
                    Ok(())
                } else {
                    fail(
                        H,
                        "signature does not match the body (wrong secret, or the body was altered)",
                    )
                }
            }
            Auth::GitlabToken(secrets) => {
                const H: &str = "X-Gitlab-Token";
                match header_str(headers, H) {
                    None => fail(H, "missing X-Gitlab-Token header"),
                    Some(t) if ct_eq_any(t.as_bytes(), secrets) => Ok(()),
                    Some(_) => fail(H, "token does not match"),
                }
            }
            Auth::Bearer(secrets) => {
                const H: &str = "Authorization";
                match header_str(headers, H).and_then(|v| v.strip_prefix("Bearer ")) {
                    None => fail(H, "missing `Authorization: Bearer <token>` header"),
                    Some(t) if ct_eq_any(t.trim().as_bytes(), secrets) => Ok(()),
                    Some(_) => fail(H, "bearer token does not match"),
                }
            }
            Auth::Hmac {
                header,
                algorithm,
                prefix,
                encoding,
                secrets,
                timestamp,
            } => {
                let Some(v) = header_str(headers, header) else {
                    return fail(header, format!("missing {header} header"));
                };
                let Some(encoded) = v.trim().strip_prefix(prefix.as_str()) else {
                    return fail(
                        header,
                        format!("malformed signature: expected prefix `{prefix}`"),
                    );
                };
                let sig = match encoding {
                    Encoding::Hex => hex::decode(encoded).ok(),
                    Encoding::Base64 => base64::engine::general_purpose::STANDARD
                        .decode(encoded)
                        .ok(),
                };
                let Some(sig) = sig else {
                    return fail(
                        header,
                        format!("malformed signature: not {encoding:?}").to_lowercase(),
                    );
                };
                let ts_value;
                let parts: Vec<&[u8]> = match timestamp {
                    None => vec![body],
                    Some((ts_header, tolerance)) => {
                        let Some(ts) = header_str(headers, ts_header) else {
                            return fail(ts_header, format!("missing {ts_header} header"));
                        };
                        let Ok(secs) = ts.trim().parse::<u64>() else {
                            return fail(ts_header, "timestamp is not unix seconds");
                        };
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_secs();
                        if now.abs_diff(secs) > tolerance.as_secs() {
                            return fail(
                                ts_header,
                                format!(
                                    "timestamp is outside the replay window of {}s",
                                    tolerance.as_secs()
                                ),
                            );
                        }
                        ts_value = ts.trim().to_string();
                        vec![ts_value.as_bytes(), b".", body]
                    }
                };
                if secrets
                    .iter()
                    .any(|k| hmac_matches(*algorithm, k, &parts, &sig))
                {
                    Ok(())
                } else {
                    fail(
                        header,
                        "signature does not match the body (wrong secret, or the body was altered)",
                    )
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn mac_hex(key: &[u8], parts: &[&[u8]]) -> String {
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        for p in parts {
            m.update(p);
        }
        hex::encode(m.finalize().into_bytes())
    }

    #[test]
    fn github_signature_checks() {
        let auth = Auth::GithubHmac(vec![b"old".to_vec(), b"new".to_vec()]);
        let body = b"{\"a\":1}";
        for key in [&b"old"[..], b"new"] {
            let sig = format!("sha256={}", mac_hex(key, &[body]));
            assert_eq!(
                auth.verify(&headers(&[("x-hub-signature-256", &sig)]), body),
                Ok(())
            );
        }
        let wrong = format!("sha256={}", mac_hex(b"other", &[body]));
        let f = auth
            .verify(&headers(&[("x-hub-signature-256", &wrong)]), body)
            .unwrap_err();
        assert_eq!(f.check, "X-Hub-Signature-256");
        assert!(f.error.contains("does not match"));
        assert!(auth
            .verify(&headers(&[]), body)
            .unwrap_err()
            .error
            .contains("missing"));
        let f = auth
            .verify(&headers(&[("x-hub-signature-256", "sha1=abc")]), body)
            .unwrap_err();
        assert!(f.error.contains("malformed"));
        let f = auth
            .verify(&headers(&[("x-hub-signature-256", "sha256=zz")]), body)
            .unwrap_err();
        assert!(f.error.contains("malformed"));
    }

    #[test]
    fn generic_hmac_prefix_encoding_and_replay_window() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let auth = Auth::Hmac {
            header: "X-Sig".into(),
            algorithm: Algorithm::Sha256,
            prefix: "v1=".into(),
            encoding: Encoding::Hex,
            secrets: vec![b"k".to_vec()],
            timestamp: Some(("X-Ts".into(), Duration::from_secs(60))),
        };
        let body = b"payload";
        let ts = now.to_string();
        let sig = format!("v1={}", mac_hex(b"k", &[ts.as_bytes(), b".", body]));
        assert_eq!(
            auth.verify(&headers(&[("x-sig", &sig), ("x-ts", &ts)]), body),
            Ok(())
        );
        // Without the prefix, without the timestamp, with an old timestamp.
        assert!(auth
            .verify(&headers(&[("x-sig", &sig[3..]), ("x-ts", &ts)]), body)
            .is_err());
        assert_eq!(
            auth.verify(&headers(&[("x-sig", &sig)]), body)
                .unwrap_err()
                .check,
            "X-Ts"
        );
        let old = (now - 120).to_string();
        let old_sig = format!("v1={}", mac_hex(b"k", &[old.as_bytes(), b".", body]));
        let f = auth
            .verify(&headers(&[("x-sig", &old_sig), ("x-ts", &old)]), body)
            .unwrap_err();
        assert!(f.error.contains("replay window"));
        let f = auth
            .verify(&headers(&[("x-sig", &sig), ("x-ts", "yesterday")]), body)
            .unwrap_err();
        assert!(f.error.contains("unix seconds"));

        // sha1 + base64, no timestamp.
        let auth = Auth::Hmac {
            header: "X-Sig".into(),
            algorithm: Algorithm::Sha1,
            prefix: String::new(),
            encoding: Encoding::Base64,
            secrets: vec![b"k".to_vec()],
            timestamp: None,
        };
        let mut m = Hmac::<sha1::Sha1>::new_from_slice(b"k").unwrap();
        m.update(body);
        let sig = base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes());
        assert_eq!(auth.verify(&headers(&[("x-sig", &sig)]), body), Ok(()));
        assert!(auth
            .verify(&headers(&[("x-sig", "!!!")]), body)
            .unwrap_err()
            .error
            .contains("base64"));
    }

    #[test]
    fn tokens_compare_exactly() {
        let gl = Auth::GitlabToken(vec![b"tok".to_vec()]);
        assert_eq!(
            gl.verify(&headers(&[("x-gitlab-token", "tok")]), b""),
            Ok(())
        );
        assert!(gl
            .verify(&headers(&[("x-gitlab-token", "to")]), b"")
            .is_err());
        assert!(gl
            .verify(&headers(&[("x-gitlab-token", "tokk")]), b"")
            .is_err());
        let bearer = Auth::Bearer(vec![b"tok".to_vec()]);
        assert_eq!(
            bearer.verify(&headers(&[("authorization", "Bearer tok")]), b""),
            Ok(())
        );
        assert!(bearer
            .verify(&headers(&[("authorization", "Basic tok")]), b"")
            .is_err());
    }
}
