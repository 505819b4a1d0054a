//! Presence: a user is online while at least one of their sessions is open. Users who share a
//! conversation with them get `presence` events when that changes.
//!
//! Flapping is coalesced: going offline is announced only after `presence_grace` (default 3 s)
//! with no session, so a quick reconnect produces no event at all; going online is announced
//! once, on the first session after an announced offline.

use std::collections::HashSet;
use std::sync::Arc;

use crate::FastDashMap;
use rookery_protocol::{encode_event, ServerEvent};

use crate::{now_ms, Hub};

/// Most users one presence change is announced to.
const MAX_AUDIENCE: usize = 10_000;

/// Who has been announced online.
#[derive(Default)]
pub struct Presence {
    announced: FastDashMap<Arc<str>, ()>,
}

impl Presence {
    /// A user's first session on this node opened.
    pub fn opened(&self, hub: &Arc<Hub>, user: Arc<str>) {
        if let Some(cluster) = hub.cluster().cloned() {
            // The cluster-wide `announced` set decides, so `online` goes out once, not per node.
            let hub = hub.clone();
            tokio::spawn(async move {
                if cluster.user_online(&user).await {
                    announce(&hub, &user, true).await;
                }
            });
            return;
        }
        if self.announced.insert(user.clone(), ()).is_none() {
            spawn_announce(hub.clone(), user, true);
        }
    }

    /// A user's last session on this node closed: announce offline unless they come back within
    /// the grace period (or, in a cluster, still have a session on another node).
    pub fn closed(&self, hub: &Arc<Hub>, user: Arc<str>) {
        let grace = hub.config.presence_grace;
        let cluster = hub.cluster().cloned();
        // A weak reference: a node shutting down must not be kept alive by a pending timer.
        let hub = Arc::downgrade(hub);
        tokio::spawn(async move {
            if let Some(c) = &cluster {
                c.user_left(&user, now_ms()).await;
            }
            tokio::time::sleep(grace).await;
            let Some(hub) = hub.upgrade() else { return };
            if hub.sessions.is_online(&user) {
                return;
            }
            let announce_it = match &cluster {
                Some(c) => c.announce_offline(&user).await,
                None => hub.presence.announced.remove(&user).is_some(),
            };
            if announce_it {
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
    let mut audience: HashSet<Arc<str>> = HashSet::new();
    for conv in convs {
        let Ok(members) = hub.store.members(&conv).await else { continue };
        audience.extend(members.into_iter().map(|(u, _)| u).filter(|u| u != user).map(Arc::from));
        if audience.len() >= MAX_AUDIENCE {
            break;
        }
    }
    // The moment the last session closed, as `presence` queries answer it.
    let last_seen = (!online).then(|| hub.sessions.last_seen(user).unwrap_or_else(now_ms));

    let status = if online { "online" } else { "offline" };
    let frame = encode_event(&ServerEvent::Presence { user_id: user, status, last_seen });
    hub.deliver(audience.into_iter().collect(), &frame);
}
