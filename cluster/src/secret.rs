//! The cluster secret (`squall.secret.file`): a shared key that closes the cluster to
//! anyone who can merely reach its ports.
//!
//! The secret lives in a file (never on a command line or in a config dump). When one is
//! configured:
//! - every Nimbus RPC carries `Authorization: Bearer <secret>`; Nimbus answers `401`
//!   without it and changes nothing;
//! - every worker-to-worker connection answers a challenge: the server sends a random
//!   nonce, the client answers with the HMAC-SHA256 of the nonce and its hello under the
//!   secret ([`Secret::sign`] / [`Secret::verify`]).
//!
//! Comparisons are constant-time.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use squall_api::Config;

/// The config key naming the secret's file.
pub const SECRET_FILE_KEY: &str = "squall.secret.file";

/// The HTTP header Nimbus reads the secret from (`Bearer <secret>`).
pub const AUTHORIZATION: &str = "authorization";

/// Length of an HMAC-SHA256 tag.
pub const TAG_LEN: usize = 32;

/// Why the secret could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("cannot read the cluster secret from {path} ({SECRET_FILE_KEY}): {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is empty or not usable as a secret.
    #[error("the cluster secret in {path} ({SECRET_FILE_KEY}) {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: &'static str,
    },
    /// The key has the wrong type.
    #[error("{SECRET_FILE_KEY}: {0}")]
    Config(#[from] squall_api::ConfigError),
}

/// The cluster secret. Cheap to clone; never printed (`Debug` hides it).
#[derive(Clone)]
pub struct Secret {
    key: Arc<[u8]>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A secret from its bytes (surrounding whitespace is trimmed).
    pub fn new(bytes: &[u8]) -> Option<Secret> {
        let trimmed = bytes.trim_ascii();
        (!trimmed.is_empty()).then(|| Secret {
            key: trimmed.into(),
        })
    }

    /// Reads the secret from `path`: at least 16 bytes, printable ASCII (it travels in
    /// an HTTP header).
    pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
        let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |problem| SecretError::Invalid {
            path: path.to_owned(),
            problem,
        };
        let secret = Secret::new(&bytes).ok_or_else(|| invalid("is empty"))?;
        if secret.key.len() < 16 {
            return Err(invalid("is shorter than 16 characters"));
        }
        if !secret.key.iter().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "must be printable ASCII without spaces (it travels in an HTTP header)",
            ));
        }
        Ok(secret)
    }

    /// The secret named by `squall.secret.file` in `conf`, or `None` when the key is unset
    /// or empty (an open cluster).
    pub fn load(conf: &Config) -> Result<Option<Secret>, SecretError> {
        match conf.get_str(SECRET_FILE_KEY)? {
            Some(p) if !p.trim().is_empty() => Ok(Some(Secret::from_file(Path::new(p.trim()))?)),
            _ => Ok(None),
        }
    }

    /// The value of the `Authorization` header that proves knowledge of the secret.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", String::from_utf8_lossy(&self.key))
    }

    /// Whether an `Authorization` header value carries this secret (constant-time).
    pub fn check_bearer(&self, header: Option<&[u8]>) -> bool {
        let Some(token) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        // Compare MACs of both, so the comparison time says nothing about the secret.
        let mut mac = self.mac();
        mac.update(token);
        mac.verify_slice(&self.sign(&self.key)).is_ok()
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length")
    }

    /// HMAC-SHA256 of `data` under the secret.
    pub fn sign(&self, data: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the HMAC-SHA256 of `data` under the secret (constant-time).
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(data);
        mac.verify_slice(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_round_trips_and_wrong_tokens_fail() {
        let s = Secret::new(b"  correct-horse-battery-staple\n").unwrap();
        assert!(s.check_bearer(Some(s.bearer().as_bytes())));
        assert!(!s.check_bearer(Some(b"Bearer correct-horse-battery-stapl")));
        assert!(!s.check_bearer(Some(b"correct-horse-battery-staple")));
        assert!(!s.check_bearer(None));
        assert!(format!("{s:?}").find("horse").is_none());
    }

    #[test]
    fn hmac_tags_verify_only_for_the_same_data_and_secret() {
        let a = Secret::new(b"0123456789abcdef").unwrap();
        let b = Secret::new(b"0123456789abcdeX").unwrap();
        let tag = a.sign(b"nonce+hello");
        assert!(a.verify(b"nonce+hello", &tag));
        assert!(!a.verify(b"nonce+hellO", &tag));
        assert!(!b.verify(b"nonce+hello", &tag));
        assert!(!a.verify(b"nonce+hello", &tag[..31]));
    }

    #[test]
    fn files_must_hold_a_usable_secret() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        assert!(matches!(
            Secret::from_file(&p),
            Err(SecretError::Read { .. })
        ));
        std::fs::write(&p, "\n").unwrap();
        assert!(Secret::from_file(&p)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        std::fs::write(&p, "short").unwrap();
        assert!(Secret::from_file(&p)
            .unwrap_err()
            .to_string()
            .contains("16"));
        std::fs::write(&p, "has a space in the middle").unwrap();
        assert!(Secret::from_file(&p).is_err());
        std::fs::write(&p, "a-long-enough-secret\n").unwrap();
        assert!(Secret::from_file(&p).is_ok());
        let mut conf = Config::new();
        assert!(Secret::load(&conf).unwrap().is_none());
        conf.set(SECRET_FILE_KEY, p.display().to_string());
        assert!(Secret::load(&conf).unwrap().is_some());
    }
}
