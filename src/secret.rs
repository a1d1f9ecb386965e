//! Secrets: read from the environment or a file (a mounted Kubernetes
//! Secret), never written inline in `tripline.yaml`. Webhook sources check
//! what senders present against them; broker sources present them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Deserialize;

static PLACEHOLDERS: AtomicBool = AtomicBool::new(false);

/// For `tripline validate --skip-secrets` (a GitOps CI job has the config but
/// not the secrets): from now on a secret that cannot be read reads as a
/// placeholder. A reference that names neither or both of `env`/`file` is
/// still an error. Nothing but `validate` turns this on.
pub fn use_placeholders() {
    PLACEHOLDERS.store(true, Ordering::Relaxed);
}

/// A secret from the environment or a file (a mounted Kubernetes Secret),
/// never inline. Several secrets may be valid at once (rotation): one per line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub file: Option<PathBuf>,
}

impl SecretRef {
    pub fn rebase(&mut self, base: &Path) {
        if let Some(f) = &mut self.file {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
    }

    /// The whole value, as stored (a NATS creds file has several blocks).
    pub fn read(&self) -> Result<String, String> {
        let placeholder = |e: String| match PLACEHOLDERS.load(Ordering::Relaxed) {
            true => Ok("placeholder-for-validate".to_string()),
            false => Err(e),
        };
        match (&self.env, &self.file) {
            (Some(var), None) => std::env::var(var)
                .or_else(|_| placeholder(format!("environment variable `{var}` is not set"))),
            (None, Some(path)) => std::fs::read_to_string(path)
                .or_else(|e| placeholder(format!("cannot read {}: {e}", path.display()))),
            _ => Err("give exactly one of `env` or `file`".into()),
        }
    }

    /// The valid secrets (non-empty lines), for checking what senders present.
    pub fn resolve(&self) -> Result<Vec<Vec<u8>>, String> {
        let secrets: Vec<Vec<u8>> = self
            .read()?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| l.as_bytes().to_vec())
            .collect();
        if secrets.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(secrets)
    }

    /// The first secret, for credentials tripline itself presents (to a
    /// broker); rotation is then the broker's matter.
    pub fn first(&self) -> Result<String, String> {
        Ok(String::from_utf8_lossy(&self.resolve()?[0]).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_resolve_from_env_or_file_and_never_inline() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "one\n\n two \n").unwrap();
        let r = SecretRef {
            env: None,
            file: Some(f),
        };
        assert_eq!(r.resolve().unwrap(), vec![b"one".to_vec(), b"two".to_vec()]);
        let r = SecretRef {
            env: Some("TRIPLINE_SURELY_UNSET".into()),
            file: None,
        };
        assert!(r.resolve().unwrap_err().contains("TRIPLINE_SURELY_UNSET"));
        let r = SecretRef {
            env: None,
            file: None,
        };
        assert!(r.resolve().is_err());
        assert!(
            serde_yaml_ng::from_str::<SecretRef>("{value: s3cret}").is_err(),
            "inline secrets are not a thing"
        );
    }
}
