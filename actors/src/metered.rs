//! `MeteredStore`: any store, with every call timed into `rookery_store_op_seconds{op}`.
//!
//! Wrapping (rather than timing at each call site) keeps the hot paths clean and covers every
//! read and write the node makes. The label is the trait method's name: bounded cardinality.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use prometheus::HistogramVec;
use rookery_protocol::{Message, Role, User};
use rookery_store::{
    AppendDone, AttachmentRecord, AuditEntry, ConvMeta, Cursor, CursorUpdate, HistoryQuery, RefreshRecord, RefreshUse,
    Sanction, Store, StoreResult, UserRecord,
};

/// A store whose calls are timed.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    seconds: HistogramVec,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>, seconds: HistogramVec) -> Self {
        MeteredStore { inner, seconds }
    }
}

#[async_trait]
impl Store for MeteredStore {
    async fn create_user(&self, record: UserRecord) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.create_user(record).await;
        self.seconds.with_label_values(&["create_user"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn user(&self, id: &str) -> StoreResult<Option<UserRecord>> {
        let started = Instant::now();
        let result = self.inner.user(id).await;
        self.seconds.with_label_values(&["user"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let started = Instant::now();
        let result = self.inner.user_by_name(username).await;
        self.seconds.with_label_values(&["user_by_name"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn update_user(&self, user: User) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.update_user(user).await;
        self.seconds.with_label_values(&["update_user"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn delete_user(&self, id: &str) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.delete_user(id).await;
        self.seconds.with_label_values(&["delete_user"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn put_refresh(&self, token_hash: &str, record: RefreshRecord) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.put_refresh(token_hash, record).await;
        self.seconds.with_label_values(&["put_refresh"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn use_refresh(&self, token_hash: &str, now_ms: i64) -> StoreResult<RefreshUse> {
        let started = Instant::now();
        let result = self.inner.use_refresh(token_hash, now_ms).await;
        self.seconds.with_label_values(&["use_refresh"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn revoke_refresh(&self, token_hash: &str) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.revoke_refresh(token_hash).await;
        self.seconds.with_label_values(&["revoke_refresh"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn revoke_user_refresh(&self, user_id: &str) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.revoke_user_refresh(user_id).await;
        self.seconds.with_label_values(&["revoke_user_refresh"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn create_conversation(&self, meta: ConvMeta, members: Vec<(String, Role)>) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.create_conversation(meta, members).await;
        self.seconds.with_label_values(&["create_conversation"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn direct_conversation(&self, a: &str, b: &str, proposed: ConvMeta) -> StoreResult<(ConvMeta, bool)> {
        let started = Instant::now();
        let result = self.inner.direct_conversation(a, b, proposed).await;
        self.seconds.with_label_values(&["direct_conversation"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn conversation(&self, id: &str) -> StoreResult<Option<ConvMeta>> {
        let started = Instant::now();
        let result = self.inner.conversation(id).await;
        self.seconds.with_label_values(&["conversation"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn set_title(&self, id: &str, title: Option<String>) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.set_title(id, title).await;
        self.seconds.with_label_values(&["set_title"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn members(&self, conv: &str) -> StoreResult<Vec<(String, Role)>> {
        let started = Instant::now();
        let result = self.inner.members(conv).await;
        self.seconds.with_label_values(&["members"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn put_member(&self, conv: &str, user: &str, role: Role) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.put_member(conv, user, role).await;
        self.seconds.with_label_values(&["put_member"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn remove_member(&self, conv: &str, user: &str) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.remove_member(conv, user).await;
        self.seconds.with_label_values(&["remove_member"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn user_conversations(&self, user: &str) -> StoreResult<Vec<String>> {
        let started = Instant::now();
        let result = self.inner.user_conversations(user).await;
        self.seconds.with_label_values(&["user_conversations"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn append_messages(&self, messages: Vec<Message>) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.append_messages(messages).await;
        self.seconds.with_label_values(&["append_messages"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn claim_conversation(&self, conv: &str, owner: &str) -> StoreResult<u64> {
        let started = Instant::now();
        let result = self.inner.claim_conversation(conv, owner).await;
        self.seconds.with_label_values(&["claim_conversation"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn append_fenced(&self, fence: u64, messages: Vec<Message>) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.append_fenced(fence, messages).await;
        self.seconds.with_label_values(&["append_messages"]).observe(started.elapsed().as_secs_f64());
        result
    }

    fn append_fenced_then(self: Arc<Self>, fence: u64, messages: Vec<Message>, json: Vec<Bytes>, done: AppendDone) {
        let started = Instant::now();
        let seconds = self.seconds.with_label_values(&["append_messages"]);
        let timed = move |result: StoreResult<()>| {
            seconds.observe(started.elapsed().as_secs_f64());
            done(result);
        };
        self.inner.clone().append_fenced_then(fence, messages, json, Box::new(timed));
    }

    async fn fence(&self, conv: &str) -> StoreResult<Option<(u64, String)>> {
        self.inner.fence(conv).await
    }

    async fn update_message(&self, message: Message) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.update_message(message).await;
        self.seconds.with_label_values(&["update_message"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn messages(&self, conv: &str, query: HistoryQuery) -> StoreResult<(Vec<Message>, bool)> {
        let started = Instant::now();
        let result = self.inner.messages(conv, query).await;
        self.seconds.with_label_values(&["messages"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn messages_json(&self, conv: &str, query: HistoryQuery) -> StoreResult<(Vec<Bytes>, bool)> {
        let started = Instant::now();
        let result = self.inner.messages_json(conv, query).await;
        self.seconds.with_label_values(&["messages"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn message(&self, conv: &str, id: &str) -> StoreResult<Option<Message>> {
        let started = Instant::now();
        let result = self.inner.message(conv, id).await;
        self.seconds.with_label_values(&["message"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn last_message(&self, conv: &str) -> StoreResult<Option<Message>> {
        let started = Instant::now();
        let result = self.inner.last_message(conv).await;
        self.seconds.with_label_values(&["last_message"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn message_by_client_id(&self, conv: &str, sender: &str, client_id: &str) -> StoreResult<Option<Message>> {
        let started = Instant::now();
        let result = self.inner.message_by_client_id(conv, sender, client_id).await;
        self.seconds.with_label_values(&["message_by_client_id"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn count_unread(&self, conv: &str, user: &str, after_seq: u64, cap: usize) -> StoreResult<usize> {
        let started = Instant::now();
        let result = self.inner.count_unread(conv, user, after_seq, cap).await;
        self.seconds.with_label_values(&["count_unread"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn put_attachment(&self, record: AttachmentRecord) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.put_attachment(record).await;
        self.seconds.with_label_values(&["put_attachment"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn attachment(&self, id: &str) -> StoreResult<Option<AttachmentRecord>> {
        let started = Instant::now();
        let result = self.inner.attachment(id).await;
        self.seconds.with_label_values(&["attachment"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn set_attachment_public(&self, id: &str) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.set_attachment_public(id).await;
        self.seconds.with_label_values(&["set_attachment_public"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn attachment_conversations(&self, id: &str) -> StoreResult<Vec<String>> {
        let started = Instant::now();
        let result = self.inner.attachment_conversations(id).await;
        self.seconds.with_label_values(&["attachment_conversations"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn set_ban(&self, user: &str, ban: Option<Sanction>) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.set_ban(user, ban).await;
        self.seconds.with_label_values(&["set_ban"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn bans(&self) -> StoreResult<Vec<(String, Sanction)>> {
        let started = Instant::now();
        let result = self.inner.bans().await;
        self.seconds.with_label_values(&["bans"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn set_mute(&self, conv: &str, user: &str, mute: Option<Sanction>) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.set_mute(conv, user, mute).await;
        self.seconds.with_label_values(&["set_mute"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn mutes(&self, conv: &str) -> StoreResult<Vec<(String, Sanction)>> {
        let started = Instant::now();
        let result = self.inner.mutes(conv).await;
        self.seconds.with_label_values(&["mutes"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn set_slow_mode(&self, conv: &str, seconds: u32) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.set_slow_mode(conv, seconds).await;
        self.seconds.with_label_values(&["set_slow_mode"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn append_audit(&self, entry: AuditEntry) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.append_audit(entry).await;
        self.seconds.with_label_values(&["append_audit"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn audit(&self, before_ts: Option<i64>, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        let started = Instant::now();
        let result = self.inner.audit(before_ts, limit).await;
        self.seconds.with_label_values(&["audit"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn list_conversations(&self, after: Option<&str>, limit: usize) -> StoreResult<Vec<ConvMeta>> {
        let started = Instant::now();
        let result = self.inner.list_conversations(after, limit).await;
        self.seconds.with_label_values(&["list_conversations"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn cursor(&self, user: &str, conv: &str) -> StoreResult<Cursor> {
        let started = Instant::now();
        let result = self.inner.cursor(user, conv).await;
        self.seconds.with_label_values(&["cursor"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn advance_cursors(&self, updates: Vec<CursorUpdate>) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.advance_cursors(updates).await;
        self.seconds.with_label_values(&["advance_cursors"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn flush(&self) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.flush().await;
        self.seconds.with_label_values(&["flush"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn ping(&self) -> StoreResult<()> {
        let started = Instant::now();
        let result = self.inner.ping().await;
        self.seconds.with_label_values(&["ping"]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn search_users(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<(Vec<User>, Option<String>)> {
        let started = Instant::now();
        let result = self.inner.search_users(prefix, cursor, limit).await;
        self.seconds.with_label_values(&["search_users"]).observe(started.elapsed().as_secs_f64());
        result
    }
}
