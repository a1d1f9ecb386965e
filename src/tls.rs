//! TLS material for the broker sources (`tls:` of a NATS or Kafka source):
//! PEM files, relative paths following `tripline.yaml`, checked at start.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::SecretRef;

/// `tls:` of a broker source. `keyPassword` is Kafka's (an encrypted key);
/// `requireTls` is NATS's (refuse a server without TLS).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsConfig {
    /// CA bundle to verify the servers (default: the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Password of an encrypted `keyFile` (Kafka).
    #[serde(default)]
    pub key_password: Option<SecretRef>,
    /// Refuse to talk to a server without TLS (NATS).
    #[serde(default)]
    pub require_tls: bool,
}

impl TlsConfig {
    /// Checks what serde cannot; errors are `(field, message)` under `tls`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err((
                "tls".into(),
                "give both `certFile` and `keyFile` (mutual TLS), or neither".into(),
            ));
        }
        Ok(())
    }

    pub fn rebase(&mut self, base: &Path) {
        for p in self.files_mut() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(k) = &mut self.key_password {
            k.rebase(base);
        }
    }

    /// Every file named must be readable: better at start than at the first
    /// reconnect.
    pub fn check_files(&self) -> Result<(), String> {
        for p in [&self.ca_file, &self.cert_file, &self.key_file]
            .into_iter()
            .flatten()
        {
            std::fs::metadata(p).map_err(|e| format!("tls: cannot read {}: {e}", p.display()))?;
        }
        Ok(())
    }

    fn files_mut(&mut self) -> impl Iterator<Item = &mut PathBuf> {
        [&mut self.ca_file, &mut self.cert_file, &mut self.key_file]
            .into_iter()
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_and_key_go_together_and_paths_follow_the_config() {
        let mut t: TlsConfig =
            serde_yaml_ng::from_str("{caFile: ca.pem, certFile: c.pem}").unwrap();
        assert!(t.validate().unwrap_err().1.contains("keyFile"));
        t.key_file = Some("k.pem".into());
        t.validate().unwrap();
        t.rebase(Path::new("/etc/tripline"));
        assert_eq!(
            t.ca_file.as_deref(),
            Some(Path::new("/etc/tripline/ca.pem"))
        );
        assert!(t
            .check_files()
            .unwrap_err()
            .contains("/etc/tripline/ca.pem"));
        assert!(serde_yaml_ng::from_str::<TlsConfig>("{caFile: x, bogus: 1}").is_err());
    }
}
