//! Access tokens (JWT, HS256 pinned, issuer and expiry checked) and refresh tokens (random,
//! stored hashed).

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The issuer written into and required from every access token.
pub const ISSUER: &str = "rookery";

/// Claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user id.
    pub sub: String,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
}

/// Mints and checks tokens.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Tokens {
    /// Uses `secret` for HS256.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 0;
        Tokens { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation }
    }

    /// An access token for `user_id` valid for `ttl_s` seconds from `now_s`.
    pub fn access(&self, user_id: &str, now_s: i64, ttl_s: i64) -> String {
        let claims = AccessClaims { sub: user_id.to_string(), iss: ISSUER.into(), iat: now_s, exp: now_s + ttl_s };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// The claims of a valid token; `None` for a bad signature, another algorithm, another
    /// issuer, an expired token or garbage.
    pub fn verify(&self, token: &str) -> Option<AccessClaims> {
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation).ok().map(|d| d.claims)
    }
}

/// A new refresh token secret (32 random bytes, base64url) and the hash the store keeps.
pub fn new_refresh_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_refresh_token(&token);
    (token, hash)
}

/// The stored form of a refresh token: hex SHA-256 of the secret.
pub fn hash_refresh_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random secret of `n` bytes, base64url (for generated JWT secrets and admin tokens).
pub fn random_secret(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn accepts_its_own_tokens_only() {
        let t = Tokens::new(SECRET);
        let far = chrono_now();
        let tok = t.access("u1", far, 60);
        assert_eq!(t.verify(&tok).unwrap().sub, "u1");
        // Expired.
        assert!(t.verify(&t.access("u1", far - 120, 60)).is_none());
        // Another key.
        assert!(Tokens::new(b"another secret another secret xx").verify(&tok).is_none());
        // Garbage.
        assert!(t.verify("not.a.jwt").is_none());
        // Another issuer.
        let claims = AccessClaims { sub: "u1".into(), iss: "evil".into(), iat: far, exp: far + 60 };
        let forged =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap();
        assert!(t.verify(&forged).is_none());
        // alg none: header {"alg":"none"} with the right claims and no signature.
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let body =
            serde_json::to_string(&AccessClaims { sub: "u1".into(), iss: ISSUER.into(), iat: far, exp: far + 60 })
                .unwrap();
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&body));
        assert!(t.verify(&none).is_none());
        // HS512 with the same secret: the algorithm is pinned.
        let hs512 =
            jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims_for(far), &EncodingKey::from_secret(SECRET))
                .unwrap();
        assert!(t.verify(&hs512).is_none());
    }

    fn claims_for(now: i64) -> AccessClaims {
        AccessClaims { sub: "u1".into(), iss: ISSUER.into(), iat: now, exp: now + 60 }
    }

    fn chrono_now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    #[test]
    fn refresh_tokens_are_random_and_stored_hashed() {
        let (a, ha) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(ha, hash_refresh_token(&a));
        assert_eq!(ha.len(), 64);
        assert!(!ha.contains(&a));
    }
}
