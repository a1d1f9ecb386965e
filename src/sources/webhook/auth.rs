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

/// Whether `given` equals one of `secrets`, in time that tells neither which
/// one nor how long they are: both sides are compared as SHA-256 digests (a
/// fixed length), and every secret is checked (no early exit).
fn ct_eq_any(given: &[u8], secrets: &[Vec<u8>]) -> bool {
    use sha2::Digest;
    let given = sha2::Sha256::digest(given);
    secrets.iter().fold(false, |acc, s| {
        acc | bool::from(given.as_slice().ct_eq(sha2::Sha256::digest(s).as_slice()))
    })
}

/// Whether any of `secrets` signed `parts` as `sig`, checking every one.
fn any_hmac(algorithm: Algorithm, secrets: &[Vec<u8>], parts: &[&[u8]], sig: &[u8]) -> bool {
    secrets
        .iter()
        .fold(false, |acc, k| acc | hmac_matches(algorithm, k, parts, sig))
}

impl Auth {
    /// Verifies the request. Error messages never echo a secret.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), AuthFailure> {
        self.check(headers, Some(body))
    }

    /// What can be checked from the headers alone, before a byte of the body
    /// is read: tokens in full; the presence and shape of a signature, and a
    /// replay window. A request failing here costs no body read and no permit.
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<(), AuthFailure> {
        self.check(headers, None)
    }

    /// Whether the body must be read before the sender is known.
    pub fn needs_body(&self) -> bool {
        matches!(self, Auth::GithubHmac(_) | Auth::Hmac { .. })
    }

    fn check(&self, headers: &HeaderMap, body: Option<&[u8]>) -> Result<(), AuthFailure> {
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
                let Some(sig) = v
                    .strip_prefix("sha256=")
                    .and_then(|h| hex::decode(h).ok())
                    .filter(|s| s.len() == 32)
                else {
                    return fail(H, "malformed signature: expected sha256=<64 hex digits>");
                };
                let Some(body) = body else { return Ok(()) };
                if any_hmac(Algorithm::Sha256, secrets, &[body], &sig) {
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
                let token = header_str(headers, H).and_then(|v| {
                    let (scheme, token) = v.trim().split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then_some(token)
                });
                match token {
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
                let body_or_empty = body.unwrap_or_default();
                let parts: Vec<&[u8]> = match timestamp {
                    None => vec![body_or_empty],
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
                        vec![ts_value.as_bytes(), b".", body_or_empty]
                    }
                };
                if body.is_none() {
                    return Ok(());
                }
                if any_hmac(*algorithm, secrets, &parts, &sig) {
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
        assert_eq!(
            bearer.check_headers(&headers(&[("authorization", "bearer tok")])),
            Ok(()),
            "the scheme is case-insensitive"
        );
        // Rotated secrets: every one is accepted.
        let two = Auth::GitlabToken(vec![b"old".to_vec(), b"new".to_vec()]);
        for t in ["old", "new"] {
            assert_eq!(
                two.check_headers(&headers(&[("x-gitlab-token", t)])),
                Ok(())
            );
        }
    }

    #[test]
    fn header_checks_come_before_the_body() {
        let gh = Auth::GithubHmac(vec![b"k".to_vec()]);
        assert!(gh.needs_body());
        assert!(gh
            .check_headers(&headers(&[]))
            .unwrap_err()
            .error
            .contains("missing"));
        assert!(gh
            .check_headers(&headers(&[("x-hub-signature-256", "sha256=abcd")]))
            .unwrap_err()
            .error
            .contains("malformed"));
        let sig = format!("sha256={}", mac_hex(b"k", &[b"body"]));
        let h = headers(&[("x-hub-signature-256", &sig)]);
        assert_eq!(gh.check_headers(&h), Ok(()), "well-formed: read the body");
        assert_eq!(gh.verify(&h, b"body"), Ok(()));
        assert!(gh.verify(&h, b"other").is_err());
        let gl = Auth::GitlabToken(vec![b"tok".to_vec()]);
        assert!(!gl.needs_body());
        assert!(gl
            .check_headers(&headers(&[("x-gitlab-token", "no")]))
            .is_err());
    }
}
