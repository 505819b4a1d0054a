//! Presence: a user is online while at least one of their sessions is open. Users who share a
//! conversation with them get `presence` events when that changes.
//!
//! Flapping is coalesced: going offline is announced only after `presence_grace` (default 3 s)
//! with no session, so a quick reconnect produces no event at all; going online is announced
//! once, on the first session after an announced offline.

use std::collections::HashSet;
use std::sync::Arc;

use dashmap::DashMap;
use rookery_protocol::{encode_event, ServerEvent};

use crate::{now_ms, Hub};

/// Most users one presence change is announced to.
const MAX_AUDIENCE: usize = 10_000;

/// Who has been announced online.
#[derive(Default)]
pub struct Presence {
    announced: DashMap<Arc<str>, ()>,
}

impl Presence {
    /// A user's first session on this node opened.
    pub fn opened(&self, hub: &Arc<Hub>, user: Arc<str>) {
        if self.announced.insert(user.clone(), ()).is_none() {
            spawn_announce(hub.clone(), user, true);
        }
    }

    /// A user's last session on this node closed: announce offline unless they come back within
    /// the grace period.
    pub fn closed(&self, hub: &Arc<Hub>, user: Arc<str>) {
        // A weak reference: a node shutting down must not be kept alive by a pending timer.
        let grace = hub.config.presence_grace;
        let hub = Arc::downgrade(hub);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let Some(hub) = hub.upgrade() else { return };
            if !hub.sessions.is_online(&user) && hub.presence.announced.remove(&user).is_some() {
                announce(&hub, &user, false).await;
            }
        });
    }
}

fn spawn_announce(hub: Arc<Hub>, user: Arc<str>, online: bool) {
    tokio::spawn(async move { announce(&hub, &user, online).await });
}

/// Sends `presence` to every user who shares a conversation with `user`.
async fn announce(hub: &Hub, user: &str, online: bool) {
    let Ok(convs) = hub.store.user_conversations(user).await else { return };
    let mut audience: HashSet<String> = HashSet::new();
    for conv in convs {
        let Ok(members) = hub.store.members(&conv).await else { continue };
        audience.extend(members.into_iter().map(|(u, _)| u).filter(|u| u != user));
        if audience.len() >= MAX_AUDIENCE {
            break;
        }
    }
    // The moment the last session closed, as `presence` queries answer it.
    let last_seen = (!online).then(|| hub.sessions.last_seen(user).unwrap_or_else(now_ms));

    let status = if online { "online" } else { "offline" };
    let frame = encode_event(&ServerEvent::Presence { user_id: user, status, last_seen });
    for peer in audience {
        hub.sessions.push_to_user(&peer, &frame);
    }
}
