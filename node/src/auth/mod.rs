//! Authentication: argon2id password hashes, JWT access tokens, rotating refresh tokens and
//! login throttling.

pub mod password;
pub mod throttle;
pub mod tokens;

pub use password::Passwords;
pub use throttle::LoginThrottle;
pub use tokens::{AccessClaims, Tokens};
