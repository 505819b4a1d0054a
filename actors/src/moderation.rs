//! Moderation that bites: bans, kicks, mutes, slow mode and message removal, each applied in
//! the data path at once and recorded in the audit log (persisted in the store).
//!
//! Bans are cached in memory (loaded at start, updated here), so checking one costs a map
//! lookup on every request; mutes and slow mode live in the conversation actor, which reloads
//! them when they change.

use std::sync::Arc;

use crate::FastDashMap;
use rookery_protocol::{close, ErrorCode};
use rookery_store::{AuditEntry, Sanction, StoreError};

use crate::conversation::ConvMsg;
use crate::requester::{Outcome, Requester};
use crate::{new_id, now_ms, Hub, RouteError};

/// Active bans by user (a cache of the store's).
#[derive(Default)]
pub struct Bans {
    map: FastDashMap<Arc<str>, Sanction>,
}

impl Bans {
    /// The ban in force on `user`, if any.
    pub fn of(&self, user: &str) -> Option<Sanction> {
        let now = now_ms();
        self.map.get(user).filter(|b| b.active(now)).map(|b| b.clone())
    }

    /// Sets (`Some`) or lifts (`None`) the cached ban of `user`.
    pub(crate) fn set(&self, user: &str, ban: Option<Sanction>) {
        match ban {
            Some(b) => {
                self.map.insert(user.into(), b);
            }
            None => {
                self.map.remove(user);
            }
        }
    }

    pub(crate) fn load(&self, bans: Vec<(String, Sanction)>) {
        for (u, b) in bans {
            self.map.insert(u.into(), b);
        }
    }
}

/// Why a moderation action failed.
#[derive(Debug, thiserror::Error)]
pub enum ModerationError {
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{1}")]
    Refused(ErrorCode, String),
}

/// What an operator asks for, with why.
pub struct Action<'a> {
    pub admin: &'a str,
    pub reason: &'a str,
}

impl Action<'_> {
    /// A sanction starting now, for `duration_s` or until lifted.
    fn sanction(&self, duration_s: Option<u64>) -> Sanction {
        let now = now_ms();
        Sanction {
            reason: self.reason.to_string(),
            by: self.admin.to_string(),
            at_ms: now,
            until_ms: duration_s.map(|d| now.saturating_add((d as i64).saturating_mul(1000))),
            account_deleted: false,
        }
    }
}

impl Hub {
    async fn audit(
        &self,
        a: &Action<'_>,
        action: &str,
        target: &str,
        details: serde_json::Value,
    ) -> Result<(), StoreError> {
        let entry = AuditEntry {
            id: new_id(),
            ts: now_ms(),
            admin: a.admin.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            reason: a.reason.to_string(),
            details,
        };
        self.store.append_audit(entry).await
    }

    async fn user_exists(&self, user: &str) -> Result<(), ModerationError> {
        if !rookery_protocol::is_valid_id(user) || self.store.user(user).await?.is_none() {
            return Err(ModerationError::NotFound("user"));
        }
        Ok(())
    }

    /// Refuses to sanction a deleted account (its mark must stay).
    fn not_deleted(&self, user: &str) -> Result<(), ModerationError> {
        if self.bans.of(user).is_some_and(|b| b.account_deleted) {
            return Err(ModerationError::Invalid("the account was deleted".into()));
        }
        Ok(())
    }

    /// Stores `user`'s ban (`Some`) or its lifting (`None`), applies it on this node and
    /// broadcasts it to the others, which apply it too.
    async fn set_ban(&self, user: &str, ban: Option<Sanction>) -> Result<(), StoreError> {
        self.store.set_ban(user, ban.clone()).await?;
        if let Some(c) = self.cluster() {
            c.broadcast_ban(user, ban.clone());
        }
        self.apply_ban(user, ban);
        Ok(())
    }

    /// A ban set or lifted, on this node: the cache every request checks, and a new ban closes
    /// the user's sessions here with its close code (4003, or 4001 for a deleted account).
    pub(crate) fn apply_ban(&self, user: &str, ban: Option<Sanction>) {
        let code = ban.as_ref().map(Sanction::close_code);
        self.bans.set(user, ban);
        if let Some(code) = code {
            for s in self.sessions.of_user(user) {
                s.close_with(code);
            }
        }
    }

    /// Bans `user` (for `duration_s`, or until lifted) and closes their sessions with 4003.
    pub async fn ban(&self, a: &Action<'_>, user: &str, duration_s: Option<u64>) -> Result<Sanction, ModerationError> {
        self.user_exists(user).await?;
        self.not_deleted(user)?;
        let ban = a.sanction(duration_s);
        self.set_ban(user, Some(ban.clone())).await?;
        self.audit(a, "ban", user, serde_json::json!({ "duration_s": duration_s })).await?;
        Ok(ban)
    }

    /// Lifts a ban.
    pub async fn unban(&self, a: &Action<'_>, user: &str) -> Result<(), ModerationError> {
        self.user_exists(user).await?;
        self.not_deleted(user)?;
        self.set_ban(user, None).await?;
        self.audit(a, "unban", user, serde_json::Value::Null).await?;
        Ok(())
    }

    /// Deletes the account of `user`, asked by the user (`a.admin` is `"self"`) or an operator.
    ///
    /// In this order, so that a failure part-way leaves the account unusable rather than half
    /// deleted (calling again finishes the job): a permanent `account_deleted` ban (every token
    /// of the user is refused from then on, on every node, and their sessions close with 4001),
    /// the user's refresh tokens revoked, the record replaced by its tombstone (profile blanked,
    /// password and username gone), and an audit entry. Messages stay in their conversations
    /// under the tombstone's name ("Deleted user"); memberships stay too.
    pub async fn delete_account(&self, a: &Action<'_>, user: &str) -> Result<(), ModerationError> {
        self.user_exists(user).await?;
        let mut mark = a.sanction(None);
        mark.account_deleted = true;
        self.set_ban(user, Some(mark)).await?;
        self.store.revoke_user_refresh(user).await?;
        self.store.delete_user(user).await?;
        self.audit(a, "delete_account", user, serde_json::Value::Null).await?;
        Ok(())
    }

    /// Closes every session of `user` with 4003 (they may reconnect).
    pub async fn kick(&self, a: &Action<'_>, user: &str) -> Result<usize, ModerationError> {
        self.user_exists(user).await?;
        let sessions = self.sessions.of_user(user);
        for s in &sessions {
            s.close_with(close::BANNED);
        }
        if let Some(c) = self.cluster() {
            c.broadcast_close(user, close::BANNED);
        }
        self.audit(a, "kick", user, serde_json::json!({ "sessions": sessions.len() })).await?;
        Ok(sessions.len())
    }

    async fn conversation_exists(&self, conv: &str) -> Result<(), ModerationError> {
        if !rookery_protocol::is_valid_id(conv) || self.store.conversation(conv).await?.is_none() {
            return Err(ModerationError::NotFound("conversation"));
        }
        Ok(())
    }

    /// Mutes `user` in `conv`: their sends get `muted` until it ends.
    pub async fn mute(
        &self,
        a: &Action<'_>,
        conv: &str,
        user: &str,
        duration_s: Option<u64>,
    ) -> Result<Sanction, ModerationError> {
        self.conversation_exists(conv).await?;
        self.user_exists(user).await?;
        let mute = a.sanction(duration_s);
        self.store.set_mute(conv, user, Some(mute.clone())).await?;
        self.router.notify_if_running(conv, ConvMsg::Reload);
        let details = serde_json::json!({ "user_id": user, "duration_s": duration_s });
        self.audit(a, "mute", conv, details).await?;
        Ok(mute)
    }

    /// Lifts a mute.
    pub async fn unmute(&self, a: &Action<'_>, conv: &str, user: &str) -> Result<(), ModerationError> {
        self.conversation_exists(conv).await?;
        self.store.set_mute(conv, user, None).await?;
        self.router.notify_if_running(conv, ConvMsg::Reload);
        self.audit(a, "unmute", conv, serde_json::json!({ "user_id": user })).await?;
        Ok(())
    }

    /// Sets slow mode (0: off; at most one day).
    pub async fn slow_mode(&self, a: &Action<'_>, conv: &str, seconds: u32) -> Result<(), ModerationError> {
        if seconds > 86_400 {
            return Err(ModerationError::Invalid("seconds must be 0-86400".into()));
        }
        self.conversation_exists(conv).await?;
        self.store.set_slow_mode(conv, seconds).await?;
        self.router.notify_if_running(conv, ConvMsg::Reload);
        self.audit(a, "slow_mode", conv, serde_json::json!({ "seconds": seconds })).await?;
        Ok(())
    }

    /// Removes a message: members get `deleted`, history keeps no body.
    pub async fn delete_message(&self, a: &Action<'_>, conv: &str, id: &str) -> Result<(), ModerationError> {
        self.conversation_exists(conv).await?;
        let (mut from, outcome) = Requester::http(a.admin);
        from.moderator = true;
        match self.router.route(conv, ConvMsg::Delete { from, id: id.to_string() }).await {
            Ok(()) => {}
            Err(RouteError::NotFound) => return Err(ModerationError::NotFound("conversation")),
            Err(RouteError::Unavailable(e)) => return Err(ModerationError::Refused(ErrorCode::Unavailable, e)),
        }
        match tokio::time::timeout(std::time::Duration::from_secs(10), outcome).await {
            Ok(Ok(Outcome::Updated(_))) => {}
            Ok(Ok(Outcome::Error(ErrorCode::NotFound, ..))) => return Err(ModerationError::NotFound("message")),
            Ok(Ok(Outcome::Error(code, m, _))) => return Err(ModerationError::Refused(code, m)),
            _ => {
                return Err(ModerationError::Refused(ErrorCode::Unavailable, "the conversation did not answer".into()))
            }
        }
        self.audit(a, "delete_message", conv, serde_json::json!({ "message_id": id })).await?;
        Ok(())
    }
}
