//! Scenario setup: users, their tokens and the rooms (conversations) they are in.
//!
//! For Rookery, users are created in bulk through the admin API (no password hashing) and
//! conversations through the public API, many requests at a time. Peers need no setup: users
//! and rooms are names.

use anyhow::{bail, Context};
use serde_json::json;

use crate::http::HttpConn;
use crate::target::Target;
use crate::{Opts, Scenario};

/// One connection of the load.
#[derive(Debug, Clone)]
pub struct ConnPlan {
    /// User name (peers) or user id (Rookery).
    pub user: String,
    pub token: Option<String>,
    /// Rooms joined (indexes into `Plan::rooms`).
    pub rooms: Vec<usize>,
    /// The room this connection sends to, if it sends.
    pub sends_to: Option<usize>,
}

/// Users and rooms of a run.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub conns: Vec<ConnPlan>,
    /// Wire names of the rooms (conversation ids for Rookery).
    pub rooms: Vec<String>,
    /// Connections of each room.
    pub members: Vec<Vec<u32>>,
}

impl Plan {
    pub fn sender_rooms(&self) -> Vec<Option<usize>> {
        self.conns.iter().map(|c| c.sends_to).collect()
    }
}

/// How connections are grouped into rooms for a scenario.
fn layout(opts: &Opts) -> Vec<Vec<u32>> {
    let n = opts.users as u32;
    match opts.scenario {
        Scenario::Group | Scenario::History => {
            let g = opts.group_size.max(2) as u32;
            (0..n.div_ceil(g)).map(|r| (r * g..((r + 1) * g).min(n)).collect()).collect()
        }
        Scenario::Direct => (0..n / 2).map(|r| vec![2 * r, 2 * r + 1]).collect(),
        Scenario::Fanout => vec![(0..n).collect()],
        Scenario::ConnectStorm | Scenario::Idle => Vec::new(),
    }
}

/// Builds the plan, creating users and conversations on Rookery.
pub async fn plan(opts: &Opts) -> anyhow::Result<Plan> {
    let members = layout(opts);
    let mut conns: Vec<ConnPlan> = (0..opts.users)
        .map(|i| ConnPlan { user: format!("u{i}"), token: None, rooms: vec![], sends_to: None })
        .collect();
    for (r, m) in members.iter().enumerate() {
        for &c in m {
            conns[c as usize].rooms.push(r);
            let sends = match opts.scenario {
                Scenario::Fanout => c == 0,
                Scenario::History => false,
                _ => true,
            };
            if sends {
                conns[c as usize].sends_to = Some(r);
            }
        }
    }
    let rooms = match opts.target {
        Target::Rookery => rookery_setup(opts, &mut conns, &members).await?,
        Target::Socketio | Target::Raw => (0..members.len()).map(|r| format!("r{r}")).collect(),
    };
    Ok(Plan { conns, rooms, members })
}

async fn rookery_setup(opts: &Opts, conns: &mut [ConnPlan], members: &[Vec<u32>]) -> anyhow::Result<Vec<String>> {
    let Some(admin_token) = &opts.admin_token else {
        bail!("--admin-token (or ROOKERY_ADMIN_TOKEN) is needed to set up users on Rookery");
    };
    let mut admin = HttpConn::connect(&opts.admin_url).await.context("the admin listener (--admin-url)")?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() % 1_000_000_000;
    // The process id too: several load generators started in the same millisecond (a soak runs
    // three at once) must not pick the same user names.
    let prefix = format!("lg{stamp}p{}-", std::process::id());
    let mut created = 0;
    while created < conns.len() {
        let count = (conns.len() - created).min(10_000);
        let batch_prefix = format!("{prefix}{created}-");
        let (status, body) = admin
            .request(
                "POST",
                "/admin/api/loadtest/users",
                Some(admin_token),
                Some(&json!({"prefix": batch_prefix, "count": count})),
            )
            .await?;
        if status != 200 {
            bail!("bulk user setup answered {status}: {body}");
        }
        for (i, u) in body["users"].as_array().context("users in the answer")?.iter().enumerate() {
            let c = &mut conns[created + i];
            c.user = u["id"].as_str().context("id")?.to_string();
            c.token = Some(u["access_token"].as_str().context("access_token")?.to_string());
        }
        created += count;
    }
    // Conversations, 16 requests at a time, each created by its first member.
    let base = opts.url[0].replace("ws://", "http://");
    let work: Vec<(usize, Vec<u32>)> = members.iter().cloned().enumerate().collect();
    let chunks: Vec<Vec<(usize, Vec<u32>)>> = work.chunks(work.len().div_ceil(16).max(1)).map(|c| c.to_vec()).collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let base = base.clone();
        let conns: Vec<ConnPlan> = conns.to_vec();
        let direct = opts.scenario == Scenario::Direct;
        tasks.push(tokio::spawn(async move {
            let mut http = HttpConn::connect(&base).await?;
            let mut out = Vec::new();
            for (room, m) in chunk {
                let owner = &conns[m[0] as usize];
                let others: Vec<&str> = m[1..].iter().map(|c| conns[*c as usize].user.as_str()).collect();
                let (first, rest) = others.split_at(others.len().min(1000));
                let body = if direct {
                    json!({"kind": "direct", "members": first})
                } else {
                    json!({"kind": "group", "title": format!("load {room}"), "members": first})
                };
                let (status, conv) =
                    http.request("POST", "/api/conversations", owner.token.as_deref(), Some(&body)).await?;
                if status != 201 && status != 200 {
                    bail!("creating a conversation answered {status}: {conv}");
                }
                let id = conv["id"].as_str().context("conversation id")?.to_string();
                for more in rest.chunks(1000) {
                    let path = format!("/api/conversations/{id}/members");
                    let (status, b) =
                        http.request("POST", &path, owner.token.as_deref(), Some(&json!({"user_ids": more}))).await?;
                    if status != 200 {
                        bail!("adding members answered {status}: {b}");
                    }
                }
                out.push((room, id));
            }
            Ok::<_, anyhow::Error>(out)
        }));
    }
    let mut rooms = vec![String::new(); members.len()];
    for t in tasks {
        for (room, id) in t.await?? {
            rooms[room] = id;
        }
    }
    Ok(rooms)
}
