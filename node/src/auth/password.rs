//! Password hashing with argon2id, off the async worker threads.
//!
//! Parameters: m = 19456 KiB, t = 2, p = 1 (the OWASP recommendation for argon2id), a 16-byte
//! random salt, PHC string format. Each hash takes tens of milliseconds of one core, so hashes
//! run on the blocking pool, at most `max_concurrent` at a time; further requests wait
//! (bounded by the HTTP server's own connection limits).

use std::sync::Arc;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when the user does not exist so that an
    /// unknown username costs the same time as a wrong password.
    decoy: Arc<String>,
}

/// Hashing failed (a bug or resource exhaustion, never a wrong password).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

impl Passwords {
    /// Creates the hasher with argon2id `(m_kib, t, p)`.
    ///
    /// # Errors
    /// Invalid parameters.
    pub fn new((m, t, p): (u32, u32, u32), max_concurrent: usize) -> Result<Self, HashError> {
        let params = Params::new(m, t, p, None).map_err(|e| HashError(e.to_string()))?;
        let decoy = hash_blocking(&params, &uuid::Uuid::new_v4().to_string())?;
        Ok(Passwords { params, permits: Arc::new(Semaphore::new(max_concurrent.max(1))), decoy: Arc::new(decoy) })
    }

    /// Hashes `password` into a PHC string.
    ///
    /// # Errors
    /// When hashing itself fails.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let _permit = self.permits.acquire().await.map_err(|e| HashError(e.to_string()))?;
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || hash_blocking(&params, &password))
            .await
            .map_err(|e| HashError(e.to_string()))?
    }

    /// Whether `password` matches `phc`; with `None` (unknown user) it checks against a decoy
    /// and answers `false` after the same work.
    pub async fn verify(&self, password: String, phc: Option<String>) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.decoy.to_string());
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&phc)
                .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
        .unwrap_or(false);
        ok && known
    }
}

fn hash_blocking(params: &Params, password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_with_argon2id_and_verifies() {
        let p = Passwords::new((19_456, 2, 1), 2).unwrap();
        let h = p.hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(p.verify("correct horse".into(), Some(h.clone())).await);
        assert!(!p.verify("wrong".into(), Some(h)).await);
        assert!(!p.verify("anything".into(), None).await);
    }
}
