//! What a failure means for the event behind it, by cause. Pure and
//! table-tested: every submitter path (create, discovery, client errors, the
//! outbox's file system) goes through here, so the decision lives in one place.
//!
//! | cause | examples | what happens |
//! |---|---|---|
//! | permanent | 400, 404 (namespace), 413, 422, "request is too large", a name too long for the file system | dead-lettered at once; the source acknowledges |
//! | transient | 409 Conflict, 429, 5xx, a timeout | retried with backoff within the event's retry budget, then dead-lettered |
//! | infrastructure | unreachable, 401/403, a kind not served (CRD missing), disk full, permission denied | retried without end, shown on `/readyz`, counted; never dead-lettered |

use std::io;

/// The meaning of one API answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 200/201/202: the object was created.
    Created,
    /// 409 `AlreadyExists`: an object of that name is there (confirmed as
    /// ours by its event-id annotation before it counts as done).
    Existing,
    Failed(Cause),
}

/// Why something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Permanent,
    Transient,
    Infrastructure,
}

/// Classifies an API answer by its HTTP status code, `Status.reason` and
/// `Status.message`.
pub fn classify(code: u16, reason: &str, message: &str) -> Verdict {
    use Cause::*;
    match code {
        200..=202 => Verdict::Created,
        409 if reason == "AlreadyExists" => Verdict::Existing,
        401 | 403 => Verdict::Failed(Infrastructure),
        413 => Verdict::Failed(Permanent),
        // etcd refuses objects over its request limit with a 500; no retry
        // makes the object smaller.
        500..=599 if too_large(message) => Verdict::Failed(Permanent),
        409 | 429 | 500..=599 => Verdict::Failed(Transient),
        _ => Verdict::Failed(Permanent),
    }
}

fn too_large(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("request is too large") || m.contains("too large to store")
}

/// Classifies a failure to write an outbox file.
pub fn classify_io(e: &io::Error) -> Cause {
    use io::ErrorKind as K;
    match e.kind() {
        // The name (from the object) cannot be a file here.
        K::InvalidFilename | K::InvalidInput => Cause::Permanent,
        K::StorageFull | K::PermissionDenied | K::ReadOnlyFilesystem | K::QuotaExceeded => {
            Cause::Infrastructure
        }
        _ => Cause::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Cause::*;

    #[test]
    fn api_answers_by_code_reason_and_message() {
        let table = [
            (201, "", "", Verdict::Created),
            (200, "", "", Verdict::Created),
            (202, "", "", Verdict::Created),
            (409, "AlreadyExists", "", Verdict::Existing),
            (409, "Conflict", "", Verdict::Failed(Transient)),
            (429, "TooManyRequests", "", Verdict::Failed(Transient)),
            (500, "InternalError", "", Verdict::Failed(Transient)),
            (503, "ServiceUnavailable", "", Verdict::Failed(Transient)),
            (504, "Timeout", "", Verdict::Failed(Transient)),
            (
                500,
                "",
                "etcdserver: request is too large",
                Verdict::Failed(Permanent),
            ),
            (413, "RequestEntityTooLarge", "", Verdict::Failed(Permanent)),
            (401, "Unauthorized", "", Verdict::Failed(Infrastructure)),
            (403, "Forbidden", "", Verdict::Failed(Infrastructure)),
            (400, "BadRequest", "", Verdict::Failed(Permanent)),
            (
                404,
                "NotFound",
                "namespaces \"x\" not found",
                Verdict::Failed(Permanent),
            ),
            (422, "Invalid", "", Verdict::Failed(Permanent)),
        ];
        for (code, reason, message, want) in table {
            assert_eq!(
                classify(code, reason, message),
                want,
                "{code} {reason} {message}"
            );
        }
    }

    #[test]
    fn file_system_errors() {
        let e = |k| io::Error::new(k, "x");
        assert_eq!(
            classify_io(&io::Error::from_raw_os_error(36)),
            Permanent,
            "ENAMETOOLONG"
        );
        assert_eq!(
            classify_io(&io::Error::from_raw_os_error(28)),
            Infrastructure,
            "ENOSPC"
        );
        assert_eq!(
            classify_io(&io::Error::from_raw_os_error(13)),
            Infrastructure,
            "EACCES"
        );
        assert_eq!(classify_io(&e(io::ErrorKind::Interrupted)), Transient);
        assert_eq!(classify_io(&e(io::ErrorKind::InvalidInput)), Permanent);
    }
}
