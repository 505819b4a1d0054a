//! The ScyllaDB backend: the shared store of a cluster.
//!
//! Written the way the driver's authors use it: every statement prepared once at connect,
//! every SELECT paged (or bounded by `LIMIT`), requests in flight bounded by a semaphore,
//! token-aware routing (the driver's default load balancing), consistency levels from the
//! configuration (default `LOCAL_QUORUM`, serial `LOCAL_SERIAL`).
//!
//! Uniqueness under concurrent nodes uses lightweight transactions (`IF NOT EXISTS` / `IF`):
//! usernames, direct-conversation pairs, refresh-token use, fence claims, and the `seq` of every
//! message (a conditional batch per history partition). `client_id` dedupe needs no LWT: the
//! fence makes one node the only writer of a conversation, and a dedupe entry is trusted only if
//! the message at its `seq` carries that sender and `client_id`.
//!
//! Verified here: the schema text, bucket arithmetic and the statement texts (unit tests). The
//! conformance suite runs against a live ScyllaDB when `ROOKERY_TEST_SCYLLA=host:port` is set
//! (`store/tests/scylla.rs`); the development machines cannot run ScyllaDB, so see
//! `docs/operations.md` for what has and has not been run against a server.

pub mod buckets;
pub mod schema;
mod statements;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use rookery_protocol::{Message, Role, User};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlValue, Row};
use tokio::sync::Semaphore;

use crate::{message_id, search_terms};
use crate::{
    AttachmentRecord, AuditEntry, ConvMeta, Cursor, CursorUpdate, HistoryQuery, RefreshRecord, RefreshUse, Sanction,
    Store, StoreError, StoreResult, UserRecord,
};
use statements::Stmts;

/// Partitions of the conversation index (console browsing in id order).
const CONV_SHARDS: i32 = 16;
/// Rows per page of a paged SELECT.
const PAGE_SIZE: i32 = 1000;

/// How to reach and use ScyllaDB.
#[derive(Debug, Clone)]
pub struct ScyllaOptions {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    /// Keyspace (created if missing). Default `rookery`.
    pub keyspace: String,
    /// Replication map for a new keyspace. Default
    /// `{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}`.
    pub replication: String,
    /// Consistency of reads and writes. Default `LOCAL_QUORUM`.
    pub consistency: Consistency,
    /// Consistency of the Paxos phase of lightweight transactions. Default `LOCAL_SERIAL`.
    pub serial_consistency: SerialConsistency,
    /// Most requests in flight from this node. Default 1024.
    pub max_in_flight: usize,
}

impl ScyllaOptions {
    /// The documented defaults for `nodes`.
    pub fn new(nodes: Vec<String>) -> Self {
        ScyllaOptions {
            nodes,
            keyspace: "rookery".into(),
            replication: "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}".into(),
            consistency: Consistency::LocalQuorum,
            serial_consistency: SerialConsistency::LocalSerial,
            max_in_flight: 1024,
        }
    }
}

/// Parses a consistency name (`one`, `quorum`, `local_quorum`, `all`, ...).
pub fn parse_consistency(name: &str) -> Option<Consistency> {
    Some(match name.to_ascii_lowercase().as_str() {
        "any" => Consistency::Any,
        "one" => Consistency::One,
        "two" => Consistency::Two,
        "three" => Consistency::Three,
        "quorum" => Consistency::Quorum,
        "all" => Consistency::All,
        "local_quorum" => Consistency::LocalQuorum,
        "each_quorum" => Consistency::EachQuorum,
        "local_one" => Consistency::LocalOne,
        _ => return None,
    })
}

/// The ScyllaDB store.
pub struct ScyllaStore {
    session: Session,
    s: Stmts,
    in_flight: Semaphore,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(table: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { keyspace: table, detail: e.to_string() }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("records encode")
}

fn from_json<T: serde::de::DeserializeOwned>(table: &'static str, s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| corrupt(table, e))
}

fn role_name(r: Role) -> String {
    serde_json::to_value(r).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| "member".into())
}

fn parse_role(s: &str) -> StoreResult<Role> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| corrupt("members", e))
}

/// The partition of a search term: its first character.
fn initial(term: &str) -> String {
    term.chars().next().map(String::from).unwrap_or_default()
}

/// The smallest string greater than every string starting with `prefix`.
fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

fn conv_shard(id: &str) -> i32 {
    (id.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % CONV_SHARDS as u32) as i32
}

fn day_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(86_400_000)
}

fn pair_key(a: &str, b: &str) -> String {
    if a <= b {
        format!("{a}\u{0}{b}")
    } else {
        format!("{b}\u{0}{a}")
    }
}

impl ScyllaStore {
    /// Connects, creates or migrates the schema, and prepares every statement.
    ///
    /// # Errors
    /// When no contact point answers, the keyspace name is invalid, or a migration fails.
    pub async fn connect(options: ScyllaOptions) -> StoreResult<ScyllaStore> {
        if !schema::valid_identifier(&options.keyspace) {
            return Err(StoreError::Unavailable(format!("invalid keyspace name {:?}", options.keyspace)));
        }
        let session = SessionBuilder::new()
            .known_nodes(&options.nodes)
            .connection_timeout(Duration::from_secs(5))
            .build()
            .await
            .map_err(unavailable)?;
        migrate(&session, &options).await?;
        let s = Stmts::prepare(&session, &options).await?;
        Ok(ScyllaStore { session, s, in_flight: Semaphore::new(options.max_in_flight.max(1)) })
    }

    async fn run(&self, st: &PreparedStatement, values: impl SerializeRow) -> StoreResult<QueryResult> {
        let _permit = self.in_flight.acquire().await.map_err(unavailable)?;
        self.session.execute_unpaged(st, values).await.map_err(unavailable)
    }

    /// A SELECT bounded by `LIMIT` (one page), as owned rows.
    async fn rows<R>(&self, st: &PreparedStatement, values: impl SerializeRow) -> StoreResult<Vec<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let result = self.run(st, values).await?;
        let rows = result.into_rows_result().map_err(unavailable)?;
        let out: Result<Vec<R>, _> = rows.rows::<R>().map_err(unavailable)?.collect();
        out.map_err(unavailable)
    }

    async fn first<R>(&self, st: &PreparedStatement, values: impl SerializeRow) -> StoreResult<Option<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        Ok(self.rows::<R>(st, values).await?.into_iter().next())
    }

    /// A SELECT of unbounded size, read page by page.
    async fn all<R>(&self, st: &PreparedStatement, values: impl SerializeRow) -> StoreResult<Vec<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm> + 'static,
    {
        let _permit = self.in_flight.acquire().await.map_err(unavailable)?;
        let pager = self.session.execute_iter(st.clone(), values).await.map_err(unavailable)?;
        pager.rows_stream::<R>().map_err(unavailable)?.try_collect().await.map_err(unavailable)
    }

    /// A lightweight transaction: whether it applied.
    async fn lwt(&self, st: &PreparedStatement, values: impl SerializeRow) -> StoreResult<bool> {
        applied(self.run(st, values).await?)
    }

    async fn batch_lwt<V: SerializeRow>(&self, batch: &Batch, values: Vec<V>) -> StoreResult<bool> {
        let _permit = self.in_flight.acquire().await.map_err(unavailable)?;
        applied(self.session.batch(batch, values).await.map_err(unavailable)?)
    }

    async fn add_member(&self, conv: &str, user: &str, role: Role) -> StoreResult<()> {
        self.run(&self.s.put_member, (conv, user, role_name(role))).await?;
        self.run(&self.s.put_user_conv, (user, conv)).await?;
        Ok(())
    }

    async fn write_conv(&self, meta: &ConvMeta) -> StoreResult<()> {
        self.run(&self.s.put_conv, (&meta.id, to_json(meta))).await?;
        self.run(&self.s.put_conv_index, (conv_shard(&meta.id), &meta.id)).await?;
        Ok(())
    }

    async fn fence_row(&self, conv: &str) -> StoreResult<Option<(i64, String)>> {
        self.first::<(i64, String)>(&self.s.get_fence, (conv,)).await
    }

    /// Writes messages: indexes first (trusted only when the message matches), then one
    /// conditional batch per history partition, so a taken `seq` is refused, never overwritten.
    async fn write_messages(&self, messages: Vec<Message>) -> StoreResult<()> {
        let mut by_partition: BTreeMap<(String, i64), Vec<&Message>> = BTreeMap::new();
        for m in &messages {
            by_partition.entry((m.conv.clone(), buckets::of(m.seq))).or_default().push(m);
            // An id that carries its own seq is found from the message's key (`message`).
            if message_id::seq_of(&m.id) != Some(m.seq) {
                self.run(&self.s.put_message_id, (&m.conv, &m.id, m.seq as i64)).await?;
            }
            if let Some(cid) = &m.client_id {
                self.run(&self.s.put_dedupe, (&m.conv, &m.sender, cid, m.seq as i64)).await?;
            }
            for a in &m.attachments {
                if let Some(id) = a.get("id").and_then(|v| v.as_str()) {
                    self.run(&self.s.put_attachment_conv, (id, &m.conv)).await?;
                }
            }
        }
        for ((conv, bucket), msgs) in by_partition {
            // One partition, so the batch is applied as one (conditional) mutation.
            let mut batch = Batch::new(BatchType::Logged);
            let mut values = Vec::new();
            for m in &msgs {
                batch.append_statement(self.s.insert_message.clone());
                values.push((conv.clone(), bucket, m.seq as i64, to_json(m)));
            }
            batch.set_consistency(self.s.consistency);
            batch.set_serial_consistency(Some(self.s.serial));
            if !self.batch_lwt(&batch, values).await? {
                return Err(StoreError::Conflict(format!("a seq in bucket {bucket} of conversation {conv} is taken")));
            }
            self.run(&self.s.put_conv_last, (&conv, bucket)).await?;
        }
        Ok(())
    }

    async fn message_at(&self, conv: &str, seq: i64) -> StoreResult<Option<Message>> {
        let row = self.first::<(String,)>(&self.s.get_message, (conv, buckets::of(seq as u64), seq)).await?;
        row.map(|(m,)| from_json("messages", &m)).transpose()
    }

    /// The highest bucket that holds messages. The hint may lag behind (or be missing after a
    /// crash between a message write and the hint's): probe upwards from it.
    async fn top_bucket(&self, conv: &str) -> StoreResult<Option<i64>> {
        let hint = self.first::<(i64,)>(&self.s.get_conv_last, (conv,)).await?.map(|(b,)| b);
        let mut top = hint.unwrap_or(-1);
        while !self.rows::<(i64,)>(&self.s.probe_bucket, (conv, top + 1)).await?.is_empty() {
            top += 1;
        }
        Ok((top >= 0).then_some(top))
    }

    async fn revoke_all_refresh(&self, user: &str) -> StoreResult<()> {
        for (hash,) in self.all::<(String,)>(&self.s.user_refresh_of, (user,)).await? {
            self.run(&self.s.delete_refresh, (&hash,)).await?;
        }
        self.run(&self.s.delete_user_refresh_all, (user,)).await?;
        Ok(())
    }
}

/// Reads `[applied]` from an LWT answer.
fn applied(result: QueryResult) -> StoreResult<bool> {
    let rows = result.into_rows_result().map_err(unavailable)?;
    let row = rows.maybe_first_row::<Row>().map_err(unavailable)?;
    match row.and_then(|r| r.columns.into_iter().next().flatten()) {
        Some(CqlValue::Boolean(b)) => Ok(b),
        other => Err(unavailable(format!("unexpected LWT answer {other:?}"))),
    }
}

/// Creates the keyspace and applies the missing migrations.
async fn migrate(session: &Session, o: &ScyllaOptions) -> StoreResult<()> {
    session.query_unpaged(schema::create_keyspace(&o.keyspace, &o.replication), ()).await.map_err(unavailable)?;
    session.query_unpaged(schema::create_version_table(&o.keyspace), ()).await.map_err(unavailable)?;
    let applied: Vec<i32> = {
        let pager = session
            .query_iter(format!("SELECT version FROM {}.schema_version", o.keyspace), ())
            .await
            .map_err(unavailable)?;
        pager.rows_stream::<(i32,)>().map_err(unavailable)?.map_ok(|(v,)| v).try_collect().await.map_err(unavailable)?
    };
    for (version, stmts) in schema::MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        for st in schema::statements(&o.keyspace, stmts) {
            session.query_unpaged(st, ()).await.map_err(unavailable)?;
        }
        session
            .query_unpaged(
                format!("INSERT INTO {}.schema_version (version, applied_at) VALUES (?, ?)", o.keyspace),
                (*version, rookery_now_ms()),
            )
            .await
            .map_err(unavailable)?;
        tracing::info!(version, keyspace = %o.keyspace, "applied ScyllaDB schema migration");
    }
    session.await_schema_agreement().await.map_err(unavailable)?;
    Ok(())
}

fn rookery_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[async_trait]
impl Store for ScyllaStore {
    async fn create_user(&self, record: UserRecord) -> StoreResult<()> {
        let u = &record.user;
        if !self.lwt(&self.s.claim_username, (&u.username, &u.id)).await? {
            return Err(StoreError::Conflict(format!("username {}", u.username)));
        }
        self.run(&self.s.put_user, (&u.id, to_json(&record))).await?;
        for term in search_terms(u) {
            self.run(&self.s.put_search, (initial(&term), &term, &u.id)).await?;
        }
        Ok(())
    }

    async fn user(&self, id: &str) -> StoreResult<Option<UserRecord>> {
        let row = self.first::<(String,)>(&self.s.get_user, (id,)).await?;
        row.map(|(r,)| from_json("users", &r)).transpose()
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        match self.first::<(String,)>(&self.s.get_username, (username,)).await? {
            Some((id,)) => Ok(self.user(&id).await?.filter(|r| !r.deleted)),
            None => Ok(None),
        }
    }

    async fn update_user(&self, user: User) -> StoreResult<()> {
        let Some(mut record) = self.user(&user.id).await? else {
            return Err(StoreError::NotFound(format!("user {}", user.id)));
        };
        for term in search_terms(&record.user) {
            self.run(&self.s.delete_search, (initial(&term), &term, &user.id)).await?;
        }
        let username = record.user.username.clone();
        record.user = User { username, ..user };
        for term in search_terms(&record.user) {
            self.run(&self.s.put_search, (initial(&term), &term, &record.user.id)).await?;
        }
        self.run(&self.s.put_user, (&record.user.id, to_json(&record))).await?;
        Ok(())
    }

    async fn delete_user(&self, id: &str) -> StoreResult<()> {
        let Some(record) = self.user(id).await? else {
            return Err(StoreError::NotFound(format!("user {id}")));
        };
        if record.deleted {
            return Ok(());
        }
        // The tombstone first: from then on the account is deleted whatever fails after; the
        // index rows left by a failure point at a tombstone, which search and login skip.
        self.run(&self.s.put_user, (id, to_json(&record.tombstone()))).await?;
        for term in search_terms(&record.user) {
            self.run(&self.s.delete_search, (initial(&term), &term, id)).await?;
        }
        self.run(&self.s.release_username, (&record.user.username, id)).await?;
        Ok(())
    }

    async fn search_users(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<(Vec<User>, Option<String>)> {
        let prefix = prefix.to_lowercase();
        let (after_term, after_id) = match cursor.and_then(|c| c.split_once('\u{0}')) {
            Some((t, i)) => (t.to_string(), i.to_string()),
            None => (prefix.clone(), String::new()),
        };
        let want = limit.saturating_add(1).min(10_000) as i32;
        let rows: Vec<(String, String)> = if prefix.is_empty() {
            // No partition to name: an empty prefix lists nobody (the API requires one).
            Vec::new()
        } else {
            self.rows(&self.s.search, (initial(&prefix), &after_term, &after_id, prefix_end(&prefix), want)).await?
        };
        let more = rows.len() > limit;
        let mut users: Vec<User> = Vec::new();
        let mut last = None;
        for (term, id) in rows.into_iter().take(limit) {
            last = Some(format!("{term}\u{0}{id}"));
            if users.iter().any(|u| u.id == id) {
                continue;
            }
            if let Some(r) = self.user(&id).await?.filter(|r| !r.deleted) {
                users.push(r.user);
            }
        }
        Ok((users, if more { last } else { None }))
    }

    async fn put_refresh(&self, token_hash: &str, record: RefreshRecord) -> StoreResult<()> {
        self.run(&self.s.put_refresh, (token_hash, &record.user_id, record.expires_at_ms, record.used)).await?;
        self.run(&self.s.put_user_refresh, (&record.user_id, token_hash)).await?;
        Ok(())
    }

    async fn use_refresh(&self, token_hash: &str, now_ms: i64) -> StoreResult<RefreshUse> {
        let Some((user_id, expires_at_ms, used)) =
            self.first::<(String, i64, bool)>(&self.s.get_refresh, (token_hash,)).await?
        else {
            return Ok(RefreshUse::Invalid);
        };
        if used {
            self.revoke_all_refresh(&user_id).await?;
            return Ok(RefreshUse::Reused);
        }
        if expires_at_ms <= now_ms {
            return Ok(RefreshUse::Invalid);
        }
        // Two concurrent uses: exactly one applies; the other is a reuse.
        if !self.lwt(&self.s.use_refresh, (token_hash,)).await? {
            self.revoke_all_refresh(&user_id).await?;
            return Ok(RefreshUse::Reused);
        }
        Ok(RefreshUse::Valid(RefreshRecord { user_id, expires_at_ms, used: true }))
    }

    async fn revoke_refresh(&self, token_hash: &str) -> StoreResult<()> {
        if let Some((user_id, _, _)) = self.first::<(String, i64, bool)>(&self.s.get_refresh, (token_hash,)).await? {
            self.run(&self.s.delete_user_refresh, (&user_id, token_hash)).await?;
        }
        self.run(&self.s.delete_refresh, (token_hash,)).await?;
        Ok(())
    }

    async fn revoke_user_refresh(&self, user_id: &str) -> StoreResult<()> {
        self.revoke_all_refresh(user_id).await
    }

    async fn create_conversation(&self, meta: ConvMeta, members: Vec<(String, Role)>) -> StoreResult<()> {
        if self.conversation(&meta.id).await?.is_some() {
            return Err(StoreError::Conflict(format!("conversation {}", meta.id)));
        }
        for (user, role) in &members {
            self.add_member(&meta.id, user, *role).await?;
        }
        self.write_conv(&meta).await
    }

    async fn direct_conversation(&self, a: &str, b: &str, proposed: ConvMeta) -> StoreResult<(ConvMeta, bool)> {
        let pair = pair_key(a, b);
        if self.lwt(&self.s.claim_direct, (&pair, &proposed.id)).await? {
            self.add_member(&proposed.id, a, Role::Member).await?;
            self.add_member(&proposed.id, b, Role::Member).await?;
            self.write_conv(&proposed).await?;
            return Ok((proposed, true));
        }
        let (id,) = self
            .first::<(String,)>(&self.s.get_direct, (&pair,))
            .await?
            .ok_or_else(|| corrupt("directs", "the pair's LWT failed but no row is there"))?;
        // The winner may still be writing the conversation: wait for it briefly.
        for _ in 0..50 {
            if let Some(meta) = self.conversation(&id).await? {
                return Ok((meta, false));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(StoreError::Unavailable(format!("direct conversation {id} is still being created; retry")))
    }

    async fn conversation(&self, id: &str) -> StoreResult<Option<ConvMeta>> {
        let row = self.first::<(String,)>(&self.s.get_conv, (id,)).await?;
        row.map(|(m,)| from_json("convs", &m)).transpose()
    }

    async fn set_title(&self, id: &str, title: Option<String>) -> StoreResult<()> {
        let Some(mut meta) = self.conversation(id).await? else {
            return Err(StoreError::NotFound(format!("conversation {id}")));
        };
        meta.title = title;
        self.run(&self.s.put_conv, (id, to_json(&meta))).await?;
        Ok(())
    }

    async fn members(&self, conv: &str) -> StoreResult<Vec<(String, Role)>> {
        let rows = self.all::<(String, String)>(&self.s.members_of, (conv,)).await?;
        rows.into_iter().map(|(u, r)| Ok((u, parse_role(&r)?))).collect()
    }

    async fn put_member(&self, conv: &str, user: &str, role: Role) -> StoreResult<()> {
        if self.conversation(conv).await?.is_none() {
            return Err(StoreError::NotFound(format!("conversation {conv}")));
        }
        self.add_member(conv, user, role).await
    }

    async fn remove_member(&self, conv: &str, user: &str) -> StoreResult<()> {
        self.run(&self.s.delete_member, (conv, user)).await?;
        self.run(&self.s.delete_user_conv, (user, conv)).await?;
        Ok(())
    }

    async fn user_conversations(&self, user: &str) -> StoreResult<Vec<String>> {
        Ok(self.all::<(String,)>(&self.s.convs_of, (user,)).await?.into_iter().map(|(c,)| c).collect())
    }

    async fn append_messages(&self, messages: Vec<Message>) -> StoreResult<()> {
        self.write_messages(messages).await
    }

    async fn claim_conversation(&self, conv: &str, owner: &str) -> StoreResult<u64> {
        for _ in 0..32 {
            let claimed = match self.fence_row(conv).await? {
                None => self.lwt(&self.s.claim_fence_first, (conv, 1i64, owner)).await?.then_some(1),
                Some((token, _)) => {
                    let next = token + 1;
                    self.lwt(&self.s.claim_fence, (next, owner, conv, token)).await?.then_some(next)
                }
            };
            if let Some(token) = claimed {
                return Ok(token as u64);
            }
        }
        Err(StoreError::Unavailable(format!("conversation {conv}: too many concurrent claims; retry")))
    }

    async fn append_fenced(&self, fence: u64, messages: Vec<Message>) -> StoreResult<()> {
        let mut checked: Vec<&str> = Vec::new();
        for m in &messages {
            if checked.contains(&m.conv.as_str()) {
                continue;
            }
            // A serial read: sees every claim that completed.
            let current =
                self.first::<(i64, String)>(&self.s.get_fence_serial, (&m.conv,)).await?.map_or(0, |(t, _)| t);
            if current as u64 != fence {
                return Err(StoreError::Fenced(format!(
                    "conversation {} is at fence {current}, the write carried {fence}",
                    m.conv
                )));
            }
            checked.push(&m.conv);
        }
        self.write_messages(messages).await
    }

    async fn fence(&self, conv: &str) -> StoreResult<Option<(u64, String)>> {
        Ok(self.fence_row(conv).await?.map(|(t, o)| (t as u64, o)))
    }

    async fn update_message(&self, message: Message) -> StoreResult<()> {
        let seq = message.seq as i64;
        if self.message_at(&message.conv, seq).await?.is_none() {
            return Err(StoreError::NotFound(format!("message {}", message.id)));
        }
        self.run(&self.s.update_message, (to_json(&message), &message.conv, buckets::of(message.seq), seq)).await?;
        Ok(())
    }

    async fn messages(&self, conv: &str, q: HistoryQuery) -> StoreResult<(Vec<Message>, bool)> {
        let lo = q.after_seq.map_or(0, |s| s.saturating_add(1));
        let hi = match q.before_seq {
            Some(0) => return Ok((Vec::new(), false)),
            Some(s) => s - 1,
            None => u64::MAX >> 1,
        };
        if lo > hi || q.limit == 0 {
            return Ok((Vec::new(), false));
        }
        let Some(top) = self.top_bucket(conv).await? else { return Ok((Vec::new(), false)) };
        let want = q.limit + 1;
        let mut out: Vec<Message> = Vec::new();
        if q.after_seq.is_some() {
            for bucket in buckets::forward(lo, hi) {
                if bucket > top || out.len() >= want {
                    break;
                }
                let n = (want - out.len()) as i32;
                for (m,) in self.rows::<(String,)>(&self.s.range_asc, (conv, bucket, lo as i64, hi as i64, n)).await? {
                    out.push(from_json("messages", &m)?);
                }
            }
        } else {
            // The highest seq the top bucket can hold bounds where a backward read starts.
            let top_seq = (top as u64 + 1) * buckets::BUCKET_SIZE - 1;
            for bucket in buckets::backward(hi.min(top_seq)) {
                if out.len() >= want {
                    break;
                }
                let n = (want - out.len()) as i32;
                for (m,) in self.rows::<(String,)>(&self.s.range_desc, (conv, bucket, lo as i64, hi as i64, n)).await? {
                    out.push(from_json("messages", &m)?);
                }
            }
            out.reverse();
        }
        let more = out.len() > q.limit;
        if more {
            if q.after_seq.is_some() {
                out.truncate(q.limit);
            } else {
                out.drain(..out.len() - q.limit);
            }
        }
        Ok((out, more))
    }

    async fn message(&self, conv: &str, id: &str) -> StoreResult<Option<Message>> {
        if let Some(seq) = message_id::seq_of(id).and_then(|s| i64::try_from(s).ok()) {
            if let Some(m) = self.message_at(conv, seq).await?.filter(|m| m.id == id) {
                return Ok(Some(m));
            }
        }
        match self.first::<(i64,)>(&self.s.get_message_id, (conv, id)).await? {
            Some((seq,)) => Ok(self.message_at(conv, seq).await?.filter(|m| m.id == id)),
            None => Ok(None),
        }
    }

    async fn last_message(&self, conv: &str) -> StoreResult<Option<Message>> {
        Ok(self.messages(conv, HistoryQuery::latest(1)).await?.0.pop())
    }

    async fn message_by_client_id(&self, conv: &str, sender: &str, client_id: &str) -> StoreResult<Option<Message>> {
        match self.first::<(i64,)>(&self.s.get_dedupe, (conv, sender, client_id)).await? {
            Some((seq,)) => Ok(self
                .message_at(conv, seq)
                .await?
                .filter(|m| m.sender == sender && m.client_id.as_deref() == Some(client_id))),
            None => Ok(None),
        }
    }

    async fn count_unread(&self, conv: &str, user: &str, after_seq: u64, cap: usize) -> StoreResult<usize> {
        let mut n = 0;
        let mut after = after_seq;
        loop {
            let (page, more) = self.messages(conv, HistoryQuery::after(after, 500)).await?;
            for m in &page {
                if n >= cap {
                    return Ok(n);
                }
                if m.sender != user && !m.deleted {
                    n += 1;
                }
            }
            match page.last() {
                Some(last) if more => after = last.seq,
                _ => return Ok(n),
            }
        }
    }

    async fn put_attachment(&self, record: AttachmentRecord) -> StoreResult<()> {
        self.run(&self.s.put_attachment, (&record.id, to_json(&record))).await?;
        Ok(())
    }

    async fn attachment(&self, id: &str) -> StoreResult<Option<AttachmentRecord>> {
        let row = self.first::<(String,)>(&self.s.get_attachment, (id,)).await?;
        row.map(|(r,)| from_json("attachments", &r)).transpose()
    }

    async fn set_attachment_public(&self, id: &str) -> StoreResult<()> {
        let Some(mut record) = self.attachment(id).await? else {
            return Err(StoreError::NotFound(format!("attachment {id}")));
        };
        record.public = true;
        self.put_attachment(record).await
    }

    async fn attachment_conversations(&self, id: &str) -> StoreResult<Vec<String>> {
        Ok(self.all::<(String,)>(&self.s.attachment_convs_of, (id,)).await?.into_iter().map(|(c,)| c).collect())
    }

    async fn set_ban(&self, user: &str, ban: Option<Sanction>) -> StoreResult<()> {
        match ban {
            Some(b) => self.run(&self.s.put_ban, (0i32, user, to_json(&b))).await?,
            None => self.run(&self.s.delete_ban, (0i32, user)).await?,
        };
        Ok(())
    }

    async fn bans(&self) -> StoreResult<Vec<(String, Sanction)>> {
        let rows = self.all::<(String, String)>(&self.s.all_bans, (0i32,)).await?;
        rows.into_iter().map(|(u, b)| Ok((u, from_json("bans", &b)?))).collect()
    }

    async fn set_mute(&self, conv: &str, user: &str, mute: Option<Sanction>) -> StoreResult<()> {
        match mute {
            Some(m) => self.run(&self.s.put_mute, (conv, user, to_json(&m))).await?,
            None => self.run(&self.s.delete_mute, (conv, user)).await?,
        };
        Ok(())
    }

    async fn mutes(&self, conv: &str) -> StoreResult<Vec<(String, Sanction)>> {
        let rows = self.all::<(String, String)>(&self.s.mutes_of, (conv,)).await?;
        rows.into_iter().map(|(u, m)| Ok((u, from_json("mutes", &m)?))).collect()
    }

    async fn set_slow_mode(&self, conv: &str, seconds: u32) -> StoreResult<()> {
        let Some(mut meta) = self.conversation(conv).await? else {
            return Err(StoreError::NotFound(format!("conversation {conv}")));
        };
        meta.slow_mode_s = seconds;
        self.run(&self.s.put_conv, (conv, to_json(&meta))).await?;
        Ok(())
    }

    async fn append_audit(&self, entry: AuditEntry) -> StoreResult<()> {
        let day = day_of(entry.ts);
        self.run(&self.s.put_audit, (day, entry.ts, &entry.id, to_json(&entry))).await?;
        self.run(&self.s.put_audit_day, (0i32, day)).await?;
        Ok(())
    }

    async fn audit(&self, before_ts: Option<i64>, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        let before = before_ts.unwrap_or(i64::MAX);
        let days = self.all::<(i64,)>(&self.s.audit_days_upto, (0i32, day_of(before.min(i64::MAX - 1)))).await?;
        let mut out = Vec::new();
        for (day,) in days {
            if out.len() >= limit {
                break;
            }
            let n = (limit - out.len()) as i32;
            for (e,) in self.rows::<(String,)>(&self.s.audit_before, (day, before, n)).await? {
                out.push(from_json("audit", &e)?);
            }
        }
        Ok(out)
    }

    async fn list_conversations(&self, after: Option<&str>, limit: usize) -> StoreResult<Vec<ConvMeta>> {
        let after = after.unwrap_or("");
        let n = limit.min(10_000) as i32;
        let mut ids = Vec::new();
        for shard in 0..CONV_SHARDS {
            ids.extend(
                self.rows::<(String,)>(&self.s.conv_index_after, (shard, after, n)).await?.into_iter().map(|(i,)| i),
            );
        }
        ids.sort();
        ids.truncate(limit);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(meta) = self.conversation(&id).await? {
                out.push(meta);
            }
        }
        Ok(out)
    }

    async fn cursor(&self, user: &str, conv: &str) -> StoreResult<Cursor> {
        let row = self.first::<(Option<i64>, Option<i64>)>(&self.s.get_cursor, (user, conv)).await?;
        Ok(row.map_or_else(Cursor::default, |(d, r)| Cursor {
            delivered_seq: d.unwrap_or(0).max(0) as u64,
            read_seq: r.unwrap_or(0).max(0) as u64,
        }))
    }

    async fn advance_cursors(&self, updates: Vec<CursorUpdate>) -> StoreResult<()> {
        for u in updates {
            // Never backwards, even with several writers: conditional raises, and only when the
            // plain read says there is something to raise.
            let row = self.first::<(Option<i64>, Option<i64>)>(&self.s.get_cursor, (&u.user, &u.conv)).await?;
            if row.is_none() {
                self.lwt(&self.s.init_cursor, (&u.user, &u.conv)).await?;
            }
            let (cur_d, cur_r) = row.map_or((0, 0), |(d, r)| (d.unwrap_or(0), r.unwrap_or(0)));
            let delivered = u.delivered_seq.max(u.read_seq).map(|d| d as i64);
            if let Some(d) = delivered.filter(|d| *d > cur_d) {
                self.lwt(&self.s.raise_delivered, (d, &u.user, &u.conv, d)).await?;
            }
            if let Some(r) = u.read_seq.map(|r| r as i64).filter(|r| *r > cur_r) {
                self.lwt(&self.s.raise_read, (r, &u.user, &u.conv, r)).await?;
            }
        }
        Ok(())
    }

    async fn flush(&self) -> StoreResult<()> {
        // Every write is acknowledged at the configured consistency before its call returns.
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        self.run(&self.s.ping, ()).await.map(|_| ())
    }
}
