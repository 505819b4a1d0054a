//! `/api/conversations/*`: create, list, read, rename, members, history and HTTP send.
//!
//! Every route checks membership first and answers 404 to non-members, whether or not the
//! conversation exists, so ids cannot be probed.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use bytes::Bytes;
use rookery_actors::{new_conversation, ConvMsg, Outcome, Requester, RouteError};
use rookery_protocol::{
    encode_event, is_valid_id, Conversation, ConversationKind, ErrorCode, Member, Message, Role, ServerEvent,
};
use rookery_store::{ConvMeta, HistoryQuery};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{
    retry_after_secs, ApiError, ErrorBody, Forbidden, TooLarge, Unauthorized, Unavailable, WriteLimited,
};
use super::extract::{ApiJson, ApiPath, ApiQuery, AuthUser};
use crate::server::App;

/// Most members one request may name.
const MAX_MEMBERS_PER_REQUEST: usize = 1000;
/// Unread counts stop at this number (clients show "999+").
const UNREAD_CAP: usize = 999;

/// What to create: the direct conversation of the caller and one other user, or a group.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CreateConversation {
    /// The one direct conversation of the caller and another user: 201 when new, 200 when it
    /// existed (whoever of the two leaves it rejoins by asking again).
    Direct {
        /// Exactly one user, not the caller.
        #[schema(min_items = 1, max_items = 1)]
        members: Vec<String>,
    },
    /// A group; the caller is its owner.
    Group {
        /// 1–100 characters, no control characters, not blank.
        #[schema(
            min_length = 1,
            max_length = 100,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
        )]
        title: String,
        /// The other members (the caller is added whether or not they are named), at most 1000;
        /// duplicates are ignored.
        #[serde(default)]
        #[schema(max_items = 1000)]
        members: Vec<String>,
    },
}

/// A conversation in the caller's list.
#[derive(Serialize, ToSchema)]
pub struct ListedConversation {
    #[serde(flatten)]
    conversation: Conversation,
    /// The newest message; omitted when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_message: Option<Message>,
    /// The caller's read cursor.
    read_seq: u64,
    /// Messages after `read_seq` sent by others and not deleted, capped at 999.
    unread: usize,
}

/// The caller's conversations.
#[derive(Serialize, ToSchema)]
pub struct ConversationList {
    /// Most recent activity first.
    conversations: Vec<ListedConversation>,
}

/// A title: 1–100 characters, no control characters, not blank.
pub fn valid_title(t: &str) -> bool {
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

/// Creates a group, or opens the direct conversation with another user.
#[utoipa::path(
    post,
    path = "/api/conversations",
    tag = "conversations",
    operation_id = "create_conversation",
    security(("bearer" = [])),
    request_body = CreateConversation,
    responses(
        (status = 201, description = "Created (a group, or a new direct conversation)", body = Conversation),
        (status = 200, description = "The existing direct conversation of the two users", body = Conversation),
        (status = 400, description = "`bad_request`: a malformed body, an invalid title, or a direct conversation that does not name exactly one other user", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "`not_found`: a named user does not exist", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 429, response = WriteLimited),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn create(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    ApiJson(body): ApiJson<CreateConversation>,
) -> Result<impl IntoResponse, ApiError> {
    match body {
        CreateConversation::Direct { members } => {
            let [other] = members.as_slice() else {
                return Err(ApiError::bad_request("a direct conversation names exactly one other member"));
            };
            if *other == me {
                return Err(ApiError::bad_request("a direct conversation needs another user"));
            }
            check_users_exist(&app, std::slice::from_ref(other)).await?;
            let proposed = new_conversation(ConversationKind::Direct, None);
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
        CreateConversation::Group { title, members } => {
            if members.len() > MAX_MEMBERS_PER_REQUEST {
                return Err(ApiError::bad_request(format!("at most {MAX_MEMBERS_PER_REQUEST} members per request")));
            }
            if !valid_title(&title) {
                return Err(ApiError::bad_request("title must be 1-100 printable characters"));
            }
            let mut others: Vec<String> = members.into_iter().filter(|m| *m != me).collect();
            others.sort();
            others.dedup();
            check_users_exist(&app, &others).await?;
            let meta = new_conversation(ConversationKind::Group, Some(title));
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

/// The caller's conversations, most recent activity first.
#[utoipa::path(
    get,
    path = "/api/conversations",
    tag = "conversations",
    operation_id = "list_conversations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's conversations, with their last message and unread count", body = ConversationList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn list(State(app): State<Arc<App>>, AuthUser(me): AuthUser) -> Result<Json<ConversationList>, ApiError> {
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
    Ok(Json(ConversationList { conversations: out }))
}

/// One conversation, its members with their read cursors (members only).
#[utoipa::path(
    get,
    path = "/api/conversations/{id}",
    tag = "conversations",
    operation_id = "get_conversation",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A conversation id")),
    responses(
        (status = 200, description = "The conversation; each member carries `read_seq`", body = Conversation),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "`not_found`: no such conversation, or the caller is not a member", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn get(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Conversation>, ApiError> {
    let (mut conv, _) = load_as_member(&app, &id, &me).await?;
    for m in &mut conv.members {
        m.read_seq = Some(app.store.cursor(&m.user_id, &id).await?.read_seq);
    }
    Ok(Json(conv))
}

/// A change of a group; absent or `null` fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchConversation {
    /// 1–100 characters, no control characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    title: Option<String>,
}

/// Renames a group (owner or admin).
#[utoipa::path(
    patch,
    path = "/api/conversations/{id}",
    tag = "conversations",
    operation_id = "patch_conversation",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A conversation id")),
    request_body = PatchConversation,
    responses(
        (status = 200, description = "The conversation as changed", body = Conversation),
        (status = 400, description = "`bad_request`: a malformed body, an invalid title, or a direct conversation (they have no title)", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: the caller is not an owner or admin, or is banned", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation, or the caller is not a member", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 429, response = WriteLimited),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn patch(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PatchConversation>,
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

/// The role members are added with (or changed to); a group has one owner, never named here.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantedRole {
    #[default]
    Member,
    Admin,
}

impl From<GrantedRole> for Role {
    fn from(r: GrantedRole) -> Role {
        match r {
            GrantedRole::Member => Role::Member,
            GrantedRole::Admin => Role::Admin,
        }
    }
}

/// Users to add to a group, or whose role to set.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMembers {
    /// 1–1000 existing users. Naming a member sets their role (the owner's never changes).
    #[schema(min_items = 1, max_items = 1000)]
    user_ids: Vec<String>,
    /// Default `member`.
    role: Option<GrantedRole>,
}

/// Adds members to a group, or sets their role (owner or admin).
#[utoipa::path(
    post,
    path = "/api/conversations/{id}/members",
    tag = "conversations",
    operation_id = "add_members",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A conversation id")),
    request_body = AddMembers,
    responses(
        (status = 200, description = "The conversation after the change", body = Conversation),
        (status = 400, description = "`bad_request`: a malformed body, or a direct conversation (they always have two members)", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: the caller is not an owner or admin, or is banned", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation, the caller is not a member, or a named user does not exist", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 429, response = WriteLimited),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn add_members(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<AddMembers>,
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
    let role = Role::from(body.role.unwrap_or_default());
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

/// Removes a member (owner or admin, by the role rules), or leaves (any member, naming
/// themselves). When the last owner leaves, the senior remaining member becomes owner.
#[utoipa::path(
    delete,
    path = "/api/conversations/{id}/members/{user_id}",
    tag = "conversations",
    operation_id = "remove_member",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "A conversation id"),
        ("user_id" = String, Path, description = "The member to remove; the caller's own id to leave"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: the caller's role does not allow removing this member, or the caller is banned", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation, the caller is not a member, or the user is not a member", body = ErrorBody),
        (status = 429, response = WriteLimited),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn remove_member(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    ApiPath((id, user)): ApiPath<(String, String)>,
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

/// The query of a history page. Any other parameter is a 400.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Only messages with a smaller seq (the newest of them).
    #[param(minimum = 0, maximum = 18446744073709551615_u64)]
    before_seq: Option<u64>,
    /// Only messages with a greater seq (the oldest of them).
    #[param(minimum = 0, maximum = 18446744073709551615_u64)]
    after_seq: Option<u64>,
    /// Messages per page, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

/// A page of history: the schema of [`page_body`]'s JSON, which writes it from the stored
/// messages' JSON without decoding them.
#[derive(Serialize, ToSchema)]
#[cfg_attr(not(test), allow(dead_code))]
pub struct MessagePage {
    /// Ascending by seq.
    messages: Vec<Message>,
    /// More messages exist beyond the page in the direction read.
    has_more: bool,
}

/// A [`MessagePage`] as JSON, from each message's JSON (`Store::messages_json`): what serde
/// writes for the page, without a decode and a re-encode of every message.
fn page_body(messages: &[Bytes], has_more: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + messages.iter().map(|m| m.len() + 1).sum::<usize>());
    out.extend_from_slice(br#"{"messages":["#);
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(m);
    }
    out.extend_from_slice(if has_more { br#"],"has_more":true}"# } else { br#"],"has_more":false}"# });
    out
}

/// A page of a conversation's history (members only).
#[utoipa::path(
    get,
    path = "/api/conversations/{id}/messages",
    tag = "conversations",
    operation_id = "list_messages",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A conversation id"), HistoryParams),
    responses(
        (status = 200, description = "Messages ascending by seq; without parameters the newest `limit`", body = MessagePage),
        (status = 400, description = "`bad_request`: an invalid parameter, or another parameter", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "`not_found`: no such conversation, or the caller is not a member", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn messages(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(p): ApiQuery<HistoryParams>,
) -> Result<impl IntoResponse, ApiError> {
    load_as_member(&app, &id, &me).await?;
    let limit = p.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1-500"));
    }
    let query = HistoryQuery { after_seq: p.after_seq, before_seq: p.before_seq, limit };
    let (messages, has_more) = app.store.messages_json(&id, query).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], page_body(&messages, has_more)))
}

/// A message to send.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    /// The sender's key for the message, 1–128 bytes: a repeated one stores nothing and answers
    /// the original message.
    #[schema(min_length = 1, max_length = 128)]
    client_id: String,
    /// At most `--max-body` bytes (default 8192); not blank unless there are attachments.
    body: String,
    /// At most 10 attachment ids (or objects with a string `id`), each readable by the sender.
    #[serde(default)]
    #[schema(value_type = Vec<serde_json::Value>, max_items = 10)]
    attachments: Vec<serde_json::Value>,
}

/// How long an HTTP send waits for its conversation's answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends a message (members only), with the rules of the WebSocket `send`; answers once it is
/// durable.
#[utoipa::path(
    post,
    path = "/api/conversations/{id}/messages",
    tag = "conversations",
    operation_id = "send_message",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A conversation id")),
    request_body = SendBody,
    responses(
        (status = 201, description = "The stored message (the original one for a repeated `client_id`)", body = Message),
        (status = 400, description = "`bad_request`: a malformed body, an invalid `client_id`, a blank body without attachments, or more than 10 attachments", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: the caller is banned; or `muted`: the caller is muted in this conversation", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation, the caller is not a member, or an attachment the caller may not read", body = ErrorBody),
        (status = 413, description = "`too_large`: the body is over `--max-body` bytes, or the request over 256 KiB", body = ErrorBody),
        (status = 429, description = "`rate_limited`: over the per-user write limit (with `Retry-After`); or `slow_mode`: slow mode is on and the caller sent recently (also with `Retry-After`)",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait (`rate_limited` only)"))),
        (status = 503, description = "`unavailable`: the store is not answering, or the conversation did not answer within 10 s (retry with the same `client_id`)",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait, when the store failed"))),
    ),
)]
pub async fn send(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    ApiPath(id): ApiPath<String>,
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
        echo: true,
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

/// The new body of a message.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditBody {
    /// At most `--max-body` bytes (default 8192), not blank.
    #[schema(pattern = r"[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")]
    body: String,
}

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
        Ok(Ok(Outcome::Error(ErrorCode::NotMember, ..))) => Err(ApiError::not_found("no such conversation")),
        Ok(Ok(Outcome::Error(code, message, retry_after_ms))) => {
            let mut e = ApiError::new(code, message);
            e.retry_after = retry_after_ms.map(|ms| retry_after_secs(Duration::from_millis(ms)));
            Err(e)
        }
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
#[utoipa::path(
    patch,
    path = "/api/conversations/{id}/messages/{msg_id}",
    tag = "conversations",
    operation_id = "edit_message",
    summary = "Edits one of the caller's messages",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "A conversation id"),
        ("msg_id" = String, Path, description = "A message id"),
    ),
    request_body = EditBody,
    responses(
        (status = 200, description = "The message as now stored", body = Message),
        (status = 400, description = "`bad_request`: a malformed body or a blank body", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: the caller did not send the message, or is banned", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation, the caller is not a member, or no such message (or it was deleted)", body = ErrorBody),
        (status = 413, description = "`too_large`: the body is over `--max-body` bytes, or the request over 256 KiB", body = ErrorBody),
        (status = 429, response = WriteLimited),
        (status = 503, description = "`unavailable`: the store is not answering, or the conversation did not answer within 10 s", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait, when the store failed"))),
    ),
)]
pub async fn edit_message(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    ApiPath((id, msg_id)): ApiPath<(String, String)>,
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
#[utoipa::path(
    delete,
    path = "/api/conversations/{id}/messages/{msg_id}",
    tag = "conversations",
    operation_id = "delete_message",
    summary = "Deletes a message (the sender's own, or any as an owner or admin)",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "A conversation id"),
        ("msg_id" = String, Path, description = "A message id"),
    ),
    responses(
        (status = 204, description = "Deleted: the message is now a tombstone"),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: the caller neither sent the message nor is an owner or admin, or is banned", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation, the caller is not a member, or no such message (or it was already deleted)", body = ErrorBody),
        (status = 429, response = WriteLimited),
        (status = 503, description = "`unavailable`: the store is not answering, or the conversation did not answer within 10 s", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait, when the store failed"))),
    ),
)]
pub async fn delete_message(
    State(app): State<Arc<App>>,
    AuthUser(me): AuthUser,
    ApiPath((id, msg_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    update_message(&app, &me, &id, |from| ConvMsg::Delete { from, id: msg_id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use rookery_protocol::encode_message;

    use super::*;

    /// The page written from the messages' JSON is what serde writes for the same page.
    #[test]
    fn a_history_page_is_written_as_serde_writes_it() {
        let message = |seq: u64, body: &str| Message {
            id: format!("m{seq}"),
            conv: "c".into(),
            seq,
            sender: "u".into(),
            ts: 7,
            body: body.into(),
            attachments: vec![serde_json::json!({"id": "a"})],
            client_id: seq.is_multiple_of(2).then(|| format!("k{seq}")),
            edited_at: None,
            deleted: false,
        };
        for messages in
            [vec![], vec![message(1, "one")], vec![message(1, "\"é\"\n"), message(2, "two"), message(3, "")]]
        {
            let json: Vec<Bytes> = messages.iter().map(encode_message).collect();
            for has_more in [false, true] {
                let expected = serde_json::to_vec(&MessagePage { messages: messages.clone(), has_more }).unwrap();
                assert_eq!(
                    String::from_utf8(page_body(&json, has_more)).unwrap(),
                    String::from_utf8(expected).unwrap()
                );
            }
        }
    }
}
