//! The local registry of sessions: who is connected to this node, and how to reach them.

use std::sync::Arc;

use crate::FastDashMap;
use bytes::Bytes;

use crate::outbound::SessionHandle;

/// Sessions on this node, by user and by session id.
#[derive(Default)]
pub struct SessionRegistry {
    by_user: FastDashMap<Arc<str>, Vec<Arc<SessionHandle>>>,
    by_id: FastDashMap<Arc<str>, Arc<SessionHandle>>,
    last_seen: FastDashMap<Arc<str>, i64>,
}

impl SessionRegistry {
    /// Adds a session. Returns whether it is the user's first session on this node.
    pub fn insert(&self, handle: Arc<SessionHandle>) -> bool {
        self.by_id.insert(handle.addr.session_id.clone(), handle.clone());
        let mut entry = self.by_user.entry(handle.addr.user_id.clone()).or_default();
        entry.push(handle);
        entry.len() == 1
    }

    /// Removes a session. Returns whether it was the user's last session on this node.
    pub fn remove(&self, handle: &SessionHandle, now_ms: i64) -> bool {
        self.by_id.remove(&handle.addr.session_id);
        let user = &handle.addr.user_id;
        let last = match self.by_user.get_mut(user) {
            Some(mut list) => {
                list.retain(|h| h.addr.session_id != handle.addr.session_id);
                list.is_empty()
            }
            None => false,
        };
        if last {
            self.by_user.remove_if(user, |_, list| list.is_empty());
            self.last_seen.insert(user.clone(), now_ms);
        }
        last
    }

    /// A session by id.
    pub fn session(&self, id: &str) -> Option<Arc<SessionHandle>> {
        self.by_id.get(id).map(|h| h.clone())
    }

    /// Queues `frame` to every session of `user`; returns how many sessions got it.
    pub fn push_to_user(&self, user: &str, frame: &Bytes) -> usize {
        self.push_to_user_except(user, frame, None)
    }

    /// Like [`push_to_user`](Self::push_to_user), skipping the session `except`.
    pub fn push_to_user_except(&self, user: &str, frame: &Bytes, except: Option<&str>) -> usize {
        match self.by_user.get(user) {
            Some(list) => {
                list.iter().filter(|h| except != Some(&*h.addr.session_id)).filter(|h| h.push(frame.clone())).count()
            }
            None => 0,
        }
    }

    /// Users with a session on this node.
    pub fn users(&self) -> Vec<Arc<str>> {
        self.by_user.iter().map(|e| e.key().clone()).collect()
    }

    /// Whether `user` has a session on this node.
    pub fn is_online(&self, user: &str) -> bool {
        self.by_user.contains_key(user)
    }

    /// When `user`'s last session on this node closed, if it did while this node ran.
    pub fn last_seen(&self, user: &str) -> Option<i64> {
        self.last_seen.get(user).map(|t| *t)
    }

    /// Every session (for shutdown).
    pub fn all(&self) -> Vec<Arc<SessionHandle>> {
        self.by_id.iter().map(|e| e.value().clone()).collect()
    }

    /// Every session of one user (for moderation).
    pub fn of_user(&self, user: &str) -> Vec<Arc<SessionHandle>> {
        self.by_user.get(user).map(|l| l.clone()).unwrap_or_default()
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}
