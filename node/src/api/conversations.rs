//! `/api/conversations/*`: create, list, read, rename, members, history and HTTP send.
//!
//! Every route checks membership first and answers 404 to non-members, whether or not the
//! conversation exists, so ids cannot be probed.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use rookery_actors::{new_id, now_ms, ConvMsg, Outcome, Requester, RouteError};
use rookery_protocol::{
    encode_event, is_valid_id, Conversation, ConversationKind, ErrorCode, Member, Message, Role, ServerEvent,
};
use rookery_store::{ConvMeta, HistoryQuery};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{ApiJson, AuthUser};
use crate::server::App;

/// Most members one request may name.
const MAX_MEMBERS_PER_REQUEST: usize = 1000;
/// Unread counts stop at this number (clients show "999+").
const UNREAD_CAP: usize = 999;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    kind: ConversationKind,
    #[serde(default)]
    members: Vec<String>,
    title: Option<String>,
}

/// A conversation in the caller's list.
#[derive(Serialize)]
pub struct ListedConversation {
    #[serde(flatten)]
    conversation: Conversation,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_message: Option<Message>,
    read_seq: u64,
    unread: usize,
}

fn valid_title(t: &str) -> bool {
    let n = t.chars().count();
    (1..=100).contains(&n) && !t.trim().is_empty() && !t.chars().any(char::is_control)
}

/// The conversation with its members if `user` is one of them; 404 otherwise.
pub async fn load_as_member(app: &App, conv: &str, user: &str) -> Result<(Conversation, Role), ApiError> {
    let not_found = || ApiError::not_found("no such conversation");
    if !is_valid_id(conv) {
        return Err(not_found());
    }
    let members = app.store.members(conv).await?;
    let Some(role) = members.iter().find(|(u, _)| u == user).map(|(_, r)| *r) else {
        return Err(not_found());
    };
    let meta = app.store.conversation(conv).await?.ok_or_else(not_found)?;
    let last_seq = app.store.last_message(conv).await?.map_or(0, |m| m.seq);
    Ok((assemble(meta, members, last_seq), role))
}

fn assemble(meta: ConvMeta, members: Vec<(String, Role)>, last_seq: u64) -> Conversation {
    Conversation {
        id: meta.id,
        kind: meta.kind,
        title: meta.title,
        members: members.into_iter().map(|(user_id, role)| Member { user_id, role, read_seq: None }).collect(),
        created_at: meta.created_at,
        last_seq,
    }
}

/// Tells members' sessions that the conversation changed, and its actor to reload.
fn announce(app: &App, conv: &Conversation, also: &[String]) {
    app.hub.router.notify_if_running(&conv.id, ConvMsg::Reload);
    let frame = encode_event(&ServerEvent::Conv { conversation: conv });
    for m in &conv.members {
        app.hub.sessions.push_to_user(&m.user_id, &frame);
    }
    for u in also {
        app.hub.sessions.push_to_user(u, &frame);
    }
}

async fn check_users_exist(app: &App, ids: &[String]) -> Result<(), ApiError> {
    for id in ids {
        if !is_valid_id(id) || app.store.user(id).await?.is_none() {
            return Err(ApiError::not_found(format!("no such user: {}", id.chars().take(64).collect::<String>())));
        }
    }
    Ok(())
}

pub async fn create(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<impl IntoResponse, ApiError> {
    if body.members.len() > MAX_MEMBERS_PER_REQUEST {
        return Err(ApiError::bad_request(format!("at most {MAX_MEMBERS_PER_REQUEST} members per request")));
    }
    let now = now_ms();
    match body.kind {
        ConversationKind::Direct => {
            let [other] = body.members.as_slice() else {
                return Err(ApiError::bad_request("a direct conversation names exactly one other member"));
            };
            if *other == me {
                return Err(ApiError::bad_request("a direct conversation needs another user"));
            }
            if body.title.is_some() {
                return Err(ApiError::bad_request("direct conversations have no title"));
            }
            check_users_exist(&app, std::slice::from_ref(other)).await?;
            let proposed =
                ConvMeta { id: new_id(), kind: ConversationKind::Direct, title: None, created_at: now, slow_mode_s: 0 };
            let (meta, created) = app.store.direct_conversation(&me, other, proposed).await?;
            // Someone who left their direct conversation rejoins it by asking for it again.
            let members = app.store.members(&meta.id).await?;
            let mut rejoined = false;
            for user in [me.as_str(), other.as_str()] {
                if !members.iter().any(|(u, _)| u == user) {
                    app.store.put_member(&meta.id, user, Role::Member).await?;
                    rejoined = true;
                }
            }
            let (conv, _) = load_as_member(&app, &meta.id, &me).await?;
            if created || rejoined {
                announce(&app, &conv, &[]);
            }
            let status = if created { StatusCode::CREATED } else { StatusCode::OK };
            Ok((status, Json(conv)))
        }
        ConversationKind::Group => {
            let title = body.title.ok_or_else(|| ApiError::bad_request("a group needs a title"))?;
            if !valid_title(&title) {
                return Err(ApiError::bad_request("title must be 1-100 printable characters"));
            }
            let mut others: Vec<String> = body.members.into_iter().filter(|m| *m != me).collect();
            others.sort();
            others.dedup();
            check_users_exist(&app, &others).await?;
            let meta = ConvMeta {
                id: new_id(),
                kind: ConversationKind::Group,
                title: Some(title),
                created_at: now,
                slow_mode_s: 0,
            };
            let mut members: Vec<(String, Role)> = others.into_iter().map(|u| (u, Role::Member)).collect();
            members.push((me.clone(), Role::Owner));
            app.store.create_conversation(meta.clone(), members.clone()).await?;
            members.sort();
            let conv = assemble(meta, members, 0);
            announce(&app, &conv, &[]);
            Ok((StatusCode::CREATED, Json(conv)))
        }
    }
}

pub async fn list(State(app): State<Arc<App>>, AuthUser(me): AuthUser) -> Result<Json<serde_json::Value>, ApiError> {
    let mut out = Vec::new();
    for id in app.store.user_conversations(&me).await? {
        let Some(meta) = app.store.conversation(&id).await? else {
            continue;
        };
        let members = app.store.members(&id).await?;
        let last_message = app.store.last_message(&id).await?;
        let read_seq = app.store.cursor(&me, &id).await?.read_seq;
        let unread = app.store.count_unread(&id, &me, read_seq, UNREAD_CAP).await?;
        let conversation = assemble(meta, members, last_message.as_ref().map_or(0, |m| m.seq));
        out.push(ListedConversation { conversation, last_message, read_seq, unread });
    }
    let activity = |c: &ListedConversation| c.last_message.as_ref().map_or(c.conversation.created_at, |m| m.ts);
    out.sort_by(|a, b| activity(b).cmp(&activity(a)).then_with(|| b.conversation.id.cmp(&a.conversation.id)));
    Ok(Json(serde_json::json!({ "conversations": out })))
}

pub async fn get(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Conversation>, ApiError> {
    let (mut conv, _) = load_as_member(&app, &id, &me).await?;
    for m in &mut conv.members {
        m.read_seq = Some(app.store.cursor(&m.user_id, &id).await?.read_seq);
    }
    Ok(Json(conv))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    title: Option<String>,
}

pub async fn patch(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchBody>,
) -> Result<Json<Conversation>, ApiError> {
    let (mut conv, role) = load_as_member(&app, &id, &me).await?;
    if conv.kind == ConversationKind::Direct {
        return Err(ApiError::bad_request("direct conversations have no title"));
    }
    if !role.can_manage() {
        return Err(ApiError::forbidden("only an owner or admin can rename"));
    }

    if let Some(title) = body.title {
        if !valid_title(&title) {
            return Err(ApiError::bad_request("title must be 1-100 printable characters"));
        }
        app.store.set_title(&id, Some(title.clone())).await?;
        conv.title = Some(title);
        announce(&app, &conv, &[]);
    }
    Ok(Json(conv))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMembersBody {
    user_ids: Vec<String>,
    role: Option<Role>,
}

pub async fn add_members(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AddMembersBody>,
) -> Result<Json<Conversation>, ApiError> {
    let (conv, my_role) = load_as_member(&app, &id, &me).await?;
    if conv.kind == ConversationKind::Direct {
        return Err(ApiError::bad_request("a direct conversation has exactly two members"));
    }
    if !my_role.can_manage() {
        return Err(ApiError::forbidden("only an owner or admin can add members"));
    }
    if body.user_ids.is_empty() || body.user_ids.len() > MAX_MEMBERS_PER_REQUEST {
        return Err(ApiError::bad_request(format!("user_ids must name 1-{MAX_MEMBERS_PER_REQUEST} users")));
    }
    let role = body.role.unwrap_or(Role::Member);
    if role == Role::Owner {
        return Err(ApiError::bad_request("role must be member or admin"));
    }
    check_users_exist(&app, &body.user_ids).await?;
    for user in &body.user_ids {
        // Never demote an owner by re-adding them.
        if conv.role_of(user) == Some(Role::Owner) {
            continue;
        }
        app.store.put_member(&id, user, role).await?;
    }
    let (conv, _) = load_as_member(&app, &id, &me).await?;
    announce(&app, &conv, &[]);
    Ok(Json(conv))
}

pub async fn remove_member(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    Path((id, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (conv, my_role) = load_as_member(&app, &id, &me).await?;
    let target_role = conv.role_of(&user).ok_or_else(|| ApiError::not_found("not a member"))?;
    if user != me {
        if conv.kind == ConversationKind::Direct || !my_role.can_manage() {
            return Err(ApiError::forbidden("only an owner or admin can remove other members"));
        }
        if target_role == Role::Owner || (target_role == Role::Admin && my_role != Role::Owner) {
            return Err(ApiError::forbidden("cannot remove a member of equal or higher role"));
        }
    }
    app.store.remove_member(&id, &user).await?;
    let mut after = conv.clone();
    after.members.retain(|m| m.user_id != user);
    // A group never stays without an owner: when the last owner leaves, the senior remaining
    // member (an admin before a member, then the lowest id) becomes owner.
    if target_role == Role::Owner && !after.members.iter().any(|m| m.role == Role::Owner) {
        let heir = after.members.iter_mut().max_by(|a, b| a.role.cmp(&b.role).then_with(|| b.user_id.cmp(&a.user_id)));
        if let Some(heir) = heir {
            heir.role = Role::Owner;
            app.store.put_member(&id, &heir.user_id, Role::Owner).await?;
        }
    }

    announce(&app, &after, &[user]);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    before_seq: Option<u64>,
    after_seq: Option<u64>,
    limit: Option<usize>,
}

pub async fn messages(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    Path(id): Path<String>,
    params: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    load_as_member(&app, &id, &me).await?;
    let limit = p.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1-500"));
    }
    let (messages, has_more) =
        app.store.messages(&id, HistoryQuery { after_seq: p.after_seq, before_seq: p.before_seq, limit }).await?;
    Ok(Json(serde_json::json!({ "messages": messages, "has_more": has_more })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    client_id: String,
    body: String,
    #[serde(default)]
    attachments: Vec<serde_json::Value>,
}

/// How long an HTTP send waits for its conversation's answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn send(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SendBody>,
) -> Result<impl IntoResponse, ApiError> {
    if body.client_id.is_empty() || body.client_id.len() > 128 {
        return Err(ApiError::bad_request("client_id must be 1-128 bytes"));
    }
    if body.body.len() > app.config.max_body {
        return Err(ApiError::new(ErrorCode::TooLarge, format!("body is over {} bytes", app.config.max_body)));
    }
    if body.body.trim().is_empty() && body.attachments.is_empty() {
        return Err(ApiError::bad_request("a message needs a body or attachments"));
    }
    if !is_valid_id(&id) {
        return Err(ApiError::not_found("no such conversation"));
    }
    let attachments = rookery_actors::attachments::resolve(&*app.store, &me, &body.attachments)
        .await
        .map_err(|(code, message)| ApiError::new(code, message))?;
    let client_id = body.client_id;
    let send = |from| ConvMsg::Send {
        from,
        client_id,
        body: body.body,
        attachments,
        received: std::time::Instant::now(),
        permit: None,
    };
    match ask(&app, &me, &id, send).await? {
        Outcome::Acked { id: msg_id, .. } => {
            let m = app.store.message(&id, &msg_id).await?.ok_or_else(ApiError::internal)?;
            Ok((StatusCode::CREATED, Json(m)))
        }
        _ => Err(ApiError::internal()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditBody {
    body: String,
}

/// Sends an edit or delete to the conversation's actor and waits for its answer.
/// Routes a request built by `msg` to the conversation's actor and waits for its answer; errors
/// come back in the API's shape (a non-member gets 404, as everywhere in the HTTP API).
async fn ask(app: &App, me: &str, conv: &str, msg: impl FnOnce(Requester) -> ConvMsg) -> Result<Outcome, ApiError> {
    if !is_valid_id(conv) {
        return Err(ApiError::not_found("no such conversation"));
    }
    let (from, outcome) = Requester::http(me);
    match app.hub.router.route(conv, msg(from)).await {
        Ok(()) => {}
        Err(RouteError::NotFound) => return Err(ApiError::not_found("no such conversation")),
        Err(RouteError::Unavailable(e)) => return Err(ApiError::new(ErrorCode::Unavailable, e)),
    }
    match tokio::time::timeout(SEND_TIMEOUT, outcome).await {
        Ok(Ok(Outcome::Error(ErrorCode::NotMember, _))) => Err(ApiError::not_found("no such conversation")),
        Ok(Ok(Outcome::Error(code, message))) => Err(ApiError::new(code, message)),
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err(ApiError::internal()),
        Err(_) => Err(ApiError::new(ErrorCode::Unavailable, "the conversation did not answer in time")),
    }
}

/// An edit or delete through the conversation's actor; the message as it is now.
async fn update_message(
    app: &App,
    me: &str,
    conv: &str,
    msg: impl FnOnce(Requester) -> ConvMsg,
) -> Result<Message, ApiError> {
    match ask(app, me, conv, msg).await? {
        Outcome::Updated(m) => Ok(*m),
        _ => Err(ApiError::internal()),
    }
}

/// `PATCH /api/conversations/{id}/messages/{msg_id}`: edit one's own message.
pub async fn edit_message(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    Path((id, msg_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<EditBody>,
) -> Result<Json<Message>, ApiError> {
    if body.body.len() > app.config.max_body {
        return Err(ApiError::new(ErrorCode::TooLarge, format!("body is over {} bytes", app.config.max_body)));
    }
    if body.body.trim().is_empty() {
        return Err(ApiError::bad_request("body must not be empty"));
    }
    let m = update_message(&app, &me, &id, |from| ConvMsg::Edit { from, id: msg_id, body: body.body }).await?;
    Ok(Json(m))
}

/// `DELETE /api/conversations/{id}/messages/{msg_id}`: delete one's own message, or any as an
/// owner or admin.
pub async fn delete_message(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    Path((id, msg_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    update_message(&app, &me, &id, |from| ConvMsg::Delete { from, id: msg_id }).await?;
    Ok(StatusCode::NO_CONTENT)
}
