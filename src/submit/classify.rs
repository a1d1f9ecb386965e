//! What a Kubernetes API answer means for the event behind it. Pure and
//! table-tested: every submitter path (create, discovery, client errors)
//! goes through [`classify`], so the decision lives in one place.

/// The meaning of one API answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 200/201/202: the object was created.
    Created,
    /// 409 `AlreadyExists`: an earlier delivery created it (the
    /// deterministic name did its job).
    Existing,
    /// 429, 5xx, a 409 other than `AlreadyExists` (a conflict that can pass):
    /// worth retrying with backoff.
    Transient,
    /// Any other 4xx (400, 403, 404, 422…): retrying cannot help; the object
    /// is dead-lettered.
    Permanent,
}

/// Classifies an answer by its HTTP status code and `Status.reason`.
pub fn classify(code: u16, reason: &str) -> Verdict {
    match code {
        200..=202 => Verdict::Created,
        409 if reason == "AlreadyExists" => Verdict::Existing,
        409 | 429 | 500..=599 => Verdict::Transient,
        _ => Verdict::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_by_code_and_reason() {
        let table = [
            (201, "", Verdict::Created),
            (200, "", Verdict::Created),
            (202, "", Verdict::Created),
            (409, "AlreadyExists", Verdict::Existing),
            (409, "Conflict", Verdict::Transient),
            (429, "TooManyRequests", Verdict::Transient),
            (500, "InternalError", Verdict::Transient),
            (503, "ServiceUnavailable", Verdict::Transient),
            (504, "Timeout", Verdict::Transient),
            (400, "BadRequest", Verdict::Permanent),
            (403, "Forbidden", Verdict::Permanent),
            (404, "NotFound", Verdict::Permanent),
            (422, "Invalid", Verdict::Permanent),
        ];
        for (code, reason, want) in table {
            assert_eq!(classify(code, reason), want, "{code} {reason}");
        }
    }
}
