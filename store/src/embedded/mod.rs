//! The embedded backend: fjall (an LSM-tree engine) in the node's data directory.
//!
//! Keys are byte strings of parts joined by `0x00`; ids never contain `0x00` (the node checks
//! ids at its edges) and a part that might (a client's `client_id`) always comes last. `seq` is
//! encoded big-endian so that keys sort in `seq` order and a page of history is one range scan.
//!
//! | keyspace | key | value |
//! | --- | --- | --- |
//! | `users` | user id | [`UserRecord`] JSON |
//! | `usernames` | username | user id |
//! | `refresh` | token hash | [`RefreshRecord`] JSON |
//! | `user_refresh` | user id, token hash | empty |
//! | `convs` | conv id | [`ConvMeta`] JSON |
//! | `members` | conv id, user id | role JSON |
//! | `user_convs` | user id, conv id | empty |
//! | `directs` | lower user id, higher user id | conv id |
//! | `messages` | conv id, seq (u64 BE) | [`Message`] JSON |
//! | `message_ids` | conv id, message id | seq (u64 BE); only for ids that do not carry their message's seq ([`message_id`]) |
//! | `dedupe` | conv id, sender, client id | seq (u64 BE) |
//! | `cursors` | user id, conv id | [`Cursor`] JSON |

mod background;
mod disk;
mod heads;
mod writer;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rookery_protocol::{encode_message, Message, Role, User};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use background::{MAX_WORKERS as ENGINE_MAX_WORKERS, MIN_WORKERS as ENGINE_MIN_WORKERS};
pub use disk::CHECK_EVERY as FREE_SPACE_CHECK_EVERY;
use heads::Note;
pub use writer::{BatchObserver, CommitDelay, COMMIT_DELAY_BELOW};
use writer::{Engine, Keyspaces, Ks, Slice, Txn, Writer};

use crate::{message_id, search_terms};

use crate::{
    AppendDone, AttachmentRecord, AuditEntry, ConvMeta, Cursor, CursorUpdate, HistoryQuery, RefreshRecord, RefreshUse,
    Sanction, Store, StoreError, StoreResult, UserRecord,
};

/// A keyspace's memtable is flushed to disk beyond this (fjall's default: 64 MiB per keyspace,
/// which with 19 keyspaces allowed 1.2 GiB of memtables). Memory held by memtables stays under
/// `19 * MEMTABLE_BYTES` (152 MiB) plus sealed memtables waiting for their flush.
pub const MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;
/// Block cache for reads.
pub const CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// Flushed memtables (level 0 tables) a keyspace gathers before they are compacted into level 1
/// (fjall's default: 4). Message keys lead with a random conversation id, so every flushed
/// table overlaps all of level 1, and each compaction from level 0 rewrites level 1 whole: at 4,
/// those rewrites kept the disk busy enough that the journal's fsync, and writes waiting on the
/// engine's version lock (held across two fsyncs whenever a flush or compaction registers its
/// tables), stalled for 10 ms and more dozens of times a minute under steady direct messages. With 12,
/// level 1 is rewritten a third as often, and half as many acks took over 10 ms at the same load
/// (docs/benchmarks.md, 2026-12-05). It stays well below the count at which the engine
/// slows writes down (20 tables) and stops them (30). Applies to keyspaces created with it: the
/// engine keeps each keyspace's setting in its data directory, so a store created before keeps
/// its 4.
pub const L0_COMPACTION_THRESHOLD: u8 = 12;

/// Options of the embedded store.
#[derive(Clone, Default)]
pub struct EmbeddedOptions {
    /// Sync the journal to disk (fsync) after each group-committed batch. Default: `true`.
    /// With `false` an acked message can be lost if the machine (not just the process) crashes.
    pub no_sync: bool,
    /// Writes are refused with `Unavailable` while the space available on the store
    /// directory's filesystem is below this many bytes (read at most every
    /// [`FREE_SPACE_CHECK_EVERY`]); reads go on, and writes resume when space returns.
    /// Default: 0, no reserve (the node's `--store-min-free-mb` defaults to 64 MiB).
    pub min_free_bytes: u64,
    /// Called after each batch with its job count and commit time.
    pub observer: Option<BatchObserver>,
    /// Group commit's wait for more jobs when writes arrive together ([`CommitDelay`]).
    /// Default: zero, no wait (the node's `--store-commit-delay-us` defaults to 1000).
    pub commit_delay: CommitDelay,
}

/// The embedded store. Cheap to clone; all clones share one database and one writer thread.
///
/// After a failed write (a full disk, an I/O error) the store refuses writes, answers reads from
/// the database as it was, and reopens the database from its directory once there is room
/// again (see the writer's module documentation).
#[derive(Clone)]
pub struct EmbeddedStore {
    engine: Arc<Engine>,
    writer: Writer,
}

impl EmbeddedStore {
    /// A page of a conversation's records, ascending by `seq`, each made into a `T` by `make`,
    /// and whether more exists in the direction read ([`Store::messages`]' rules).
    fn history_page<T>(
        &self,
        conv: &str,
        q: HistoryQuery,
        mut make: impl FnMut(&[u8]) -> StoreResult<T>,
    ) -> StoreResult<(Vec<T>, bool)> {
        let lo = msg_key(conv, q.after_seq.map_or(0, |s| s.saturating_add(1)));
        let hi = match q.before_seq {
            Some(0) => return Ok((Vec::new(), false)),
            Some(s) => msg_key(conv, s - 1),
            None => msg_key(conv, u64::MAX),
        };
        let keyspaces = self.ks()?;
        let range = keyspaces.get(Ks::Messages).range(lo..=hi);
        let mut out = Vec::with_capacity(q.limit.min(512));
        let mut has_more = false;
        let forward = q.after_seq.is_some();
        let mut push = |guard: fjall::Guard| -> StoreResult<bool> {
            if out.len() == q.limit {
                has_more = true;
                return Ok(false);
            }
            let (_, v) = guard.into_inner().map_err(unavailable)?;
            out.push(make(&v)?);
            Ok(true)
        };
        if forward {
            for g in range {
                if !push(g)? {
                    break;
                }
            }
        } else {
            for g in range.rev() {
                if !push(g)? {
                    break;
                }
            }
            out.reverse();
        }
        Ok((out, has_more))
    }

    /// Opens (or creates) the store in `dir`.
    ///
    /// # Errors
    /// `Unavailable` when the directory cannot be created or the database cannot be opened (for
    /// example another process holds it).
    pub fn open(dir: &Path, options: EmbeddedOptions) -> StoreResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?;
        let engine = Arc::new(Engine::open(dir, options.min_free_bytes)?);
        let writer = Writer::start(engine.clone(), !options.no_sync, options.commit_delay, options.observer);
        Ok(EmbeddedStore { engine, writer })
    }

    /// The open database (briefly unavailable while it is reopened after a failed write).
    fn ks(&self) -> StoreResult<Arc<Keyspaces>> {
        self.engine.keyspaces()
    }

    fn get_raw(&self, ks: Ks, key: &[u8]) -> StoreResult<Option<fjall::Slice>> {
        self.ks()?.get(ks).get(key).map_err(unavailable)
    }

    fn get_json<T: DeserializeOwned>(&self, ks: Ks, key: &[u8]) -> StoreResult<Option<T>> {
        match self.get_raw(ks, key)? {
            Some(v) => Ok(Some(decode(ks, &v)?)),
            None => Ok(None),
        }
    }

    /// Every (key suffix after the prefix, value) under `prefix`.
    fn scan(&self, ks: Ks, prefix: &[u8]) -> StoreResult<Vec<(Vec<u8>, fjall::Slice)>> {
        let mut out = Vec::new();
        for guard in self.ks()?.get(ks).prefix(prefix) {
            let (k, v) = guard.into_inner().map_err(unavailable)?;
            out.push((k[prefix.len()..].to_vec(), v));
        }
        Ok(out)
    }
}

fn unavailable(e: fjall::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The longest key [`key`] assembles on the stack; longer ones take a heap buffer first.
const STACK_KEY: usize = 192;

/// A key of `parts` joined by a 0 byte, made directly as the engine's [`Slice`]: a short key is
/// kept inline in it, a longer one in its one allocation (no `Vec` in between).
fn key(parts: &[&[u8]]) -> Slice {
    let len = parts.iter().map(|p| p.len()).sum::<usize>() + parts.len().saturating_sub(1);
    let mut stack = [0u8; STACK_KEY];
    let mut heap = Vec::new();
    let buf = if len <= STACK_KEY {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap[..]
    };
    let mut at = 0;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            buf[at] = 0;
            at += 1;
        }
        buf[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    Slice::new(buf)
}

fn prefix(part: &str) -> Vec<u8> {
    let mut k = part.as_bytes().to_vec();
    k.push(0);
    k
}

fn msg_key(conv: &str, seq: u64) -> Slice {
    key(&[conv.as_bytes(), &seq.to_be_bytes()])
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("store records always serialise")
}

fn decode<T: DeserializeOwned>(ks: Ks, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { keyspace: ks.name(), detail: e.to_string() })
}

fn seq_of(ks: Ks, bytes: &[u8]) -> StoreResult<u64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt { keyspace: ks.name(), detail: "seq is not 8 bytes".into() })?;
    Ok(u64::from_be_bytes(arr))
}

fn revoke_all_refresh(txn: &mut Txn<'_>, user_id: &str) -> StoreResult<()> {
    let p = prefix(user_id);
    for k in txn.scan_keys(Ks::UserRefresh, &p)? {
        txn.delete(Ks::Refresh, k[p.len()..].to_vec());
        txn.delete(Ks::UserRefresh, k);
    }
    Ok(())
}

fn add_member(txn: &mut Txn<'_>, conv: &str, user: &str, role: Role) {
    txn.put(Ks::Members, key(&[conv.as_bytes(), user.as_bytes()]), encode(&role));
    txn.put(Ks::UserConvs, key(&[user.as_bytes(), conv.as_bytes()]), Vec::new());
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn create_user(&self, record: UserRecord) -> StoreResult<()> {
        self.writer
            .submit(move |txn| {
                let name = record.user.username.as_bytes().to_vec();
                if txn.get(Ks::Usernames, &name)?.is_some() {
                    return Err(StoreError::Conflict(format!("username {:?}", record.user.username)));
                }
                txn.put(Ks::Usernames, name, record.user.id.as_bytes().to_vec());
                for term in search_terms(&record.user) {
                    txn.put(Ks::UserSearch, key(&[term.as_bytes(), record.user.id.as_bytes()]), Vec::new());
                }
                txn.put(Ks::Users, record.user.id.as_bytes().to_vec(), encode(&record));
                Ok(())
            })
            .await
    }

    async fn user(&self, id: &str) -> StoreResult<Option<UserRecord>> {
        self.get_json(Ks::Users, id.as_bytes())
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        match self.get_raw(Ks::Usernames, username.as_bytes())? {
            Some(id) => self.get_json(Ks::Users, &id),
            None => Ok(None),
        }
    }

    async fn update_user(&self, user: User) -> StoreResult<()> {
        self.writer
            .submit(move |txn| {
                let k = user.id.as_bytes().to_vec();
                let Some(raw) = txn.get(Ks::Users, &k)? else {
                    return Err(StoreError::NotFound(format!("user {}", user.id)));
                };
                let mut record: UserRecord = decode(Ks::Users, &raw)?;
                for term in search_terms(&record.user) {
                    txn.delete(Ks::UserSearch, key(&[term.as_bytes(), record.user.id.as_bytes()]));
                }
                record.user.display_name = user.display_name;
                record.user.avatar = user.avatar;
                for term in search_terms(&record.user) {
                    txn.put(Ks::UserSearch, key(&[term.as_bytes(), record.user.id.as_bytes()]), Vec::new());
                }
                txn.put(Ks::Users, k, encode(&record));
                Ok(())
            })
            .await
    }

    async fn delete_user(&self, id: &str) -> StoreResult<()> {
        let id = id.to_string();
        self.writer
            .submit(move |txn| {
                let k = id.as_bytes().to_vec();
                let Some(raw) = txn.get(Ks::Users, &k)? else {
                    return Err(StoreError::NotFound(format!("user {id}")));
                };
                let record: UserRecord = decode(Ks::Users, &raw)?;
                if record.deleted {
                    return Ok(());
                }
                for term in search_terms(&record.user) {
                    txn.delete(Ks::UserSearch, key(&[term.as_bytes(), id.as_bytes()]));
                }
                txn.delete(Ks::Usernames, record.user.username.as_bytes().to_vec());
                txn.put(Ks::Users, k, encode(&record.tombstone()));
                Ok(())
            })
            .await
    }

    async fn search_users(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<(Vec<User>, Option<String>)> {
        let prefix = prefix.to_lowercase();
        let start = match cursor.and_then(unhex) {
            // Resume strictly after the last key returned.
            Some(mut k) => {
                k.push(0xff);
                k
            }
            None => prefix.as_bytes().to_vec(),
        };
        let mut users: Vec<User> = Vec::new();
        let mut last_key = None;
        let mut more = false;
        for guard in self.ks()?.get(Ks::UserSearch).range(start..) {
            let (k, _) = guard.into_inner().map_err(unavailable)?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            if users.len() == limit {
                more = true;
                break;
            }
            let id = k.rsplit(|b| *b == 0).next().unwrap_or_default();
            last_key = Some(k.to_vec());
            let id = String::from_utf8_lossy(id);
            if users.iter().any(|u| u.id == id) {
                continue;
            }
            if let Some(r) = self.get_json::<UserRecord>(Ks::Users, id.as_bytes())?.filter(|r| !r.deleted) {
                users.push(r.user);
            }
        }
        Ok((users, if more { last_key.map(|k| hex(&k)) } else { None }))
    }

    async fn put_refresh(&self, token_hash: &str, record: RefreshRecord) -> StoreResult<()> {
        let hash = token_hash.to_string();
        self.writer
            .submit(move |txn| {
                txn.put(Ks::UserRefresh, key(&[record.user_id.as_bytes(), hash.as_bytes()]), Vec::new());
                txn.put(Ks::Refresh, hash.into_bytes(), encode(&record));
                Ok(())
            })
            .await
    }

    async fn use_refresh(&self, token_hash: &str, now_ms: i64) -> StoreResult<RefreshUse> {
        let hash = token_hash.as_bytes().to_vec();
        self.writer
            .submit(move |txn| {
                let Some(raw) = txn.get(Ks::Refresh, &hash)? else {
                    return Ok(RefreshUse::Invalid);
                };
                let mut record: RefreshRecord = decode(Ks::Refresh, &raw)?;
                if record.used {
                    revoke_all_refresh(txn, &record.user_id)?;
                    return Ok(RefreshUse::Reused);
                }
                if record.expires_at_ms <= now_ms {
                    return Ok(RefreshUse::Invalid);
                }
                record.used = true;
                txn.put(Ks::Refresh, hash, encode(&record));
                Ok(RefreshUse::Valid(record))
            })
            .await
    }

    async fn revoke_refresh(&self, token_hash: &str) -> StoreResult<()> {
        let hash = token_hash.as_bytes().to_vec();
        self.writer
            .submit(move |txn| {
                if let Some(raw) = txn.get(Ks::Refresh, &hash)? {
                    let record: RefreshRecord = decode(Ks::Refresh, &raw)?;
                    txn.delete(Ks::UserRefresh, key(&[record.user_id.as_bytes(), &hash]));
                    txn.delete(Ks::Refresh, hash);
                }
                Ok(())
            })
            .await
    }

    async fn revoke_user_refresh(&self, user_id: &str) -> StoreResult<()> {
        let user = user_id.to_string();
        self.writer.submit(move |txn| revoke_all_refresh(txn, &user)).await
    }

    async fn create_conversation(&self, meta: ConvMeta, members: Vec<(String, Role)>) -> StoreResult<()> {
        self.writer
            .submit(move |txn| {
                let k = meta.id.as_bytes().to_vec();
                if txn.get(Ks::Convs, &k)?.is_some() {
                    return Err(StoreError::Conflict(format!("conversation {}", meta.id)));
                }
                for (user, role) in &members {
                    add_member(txn, &meta.id, user, *role);
                }
                txn.put(Ks::Convs, k, encode(&meta));
                Ok(())
            })
            .await
    }

    async fn direct_conversation(&self, a: &str, b: &str, proposed: ConvMeta) -> StoreResult<(ConvMeta, bool)> {
        let (lo, hi) = if a <= b { (a.to_string(), b.to_string()) } else { (b.to_string(), a.to_string()) };
        self.writer
            .submit(move |txn| {
                let pair = key(&[lo.as_bytes(), hi.as_bytes()]);
                if let Some(id) = txn.get(Ks::Directs, &pair)? {
                    let raw = txn.get(Ks::Convs, &id)?.ok_or_else(|| StoreError::Corrupt {
                        keyspace: "directs",
                        detail: "dangling conversation".into(),
                    })?;
                    return Ok((decode(Ks::Convs, &raw)?, false));
                }
                txn.put(Ks::Directs, pair, proposed.id.as_bytes().to_vec());
                add_member(txn, &proposed.id, &lo, Role::Member);
                add_member(txn, &proposed.id, &hi, Role::Member);
                txn.put(Ks::Convs, proposed.id.as_bytes().to_vec(), encode(&proposed));
                Ok((proposed, true))
            })
            .await
    }

    async fn conversation(&self, id: &str) -> StoreResult<Option<ConvMeta>> {
        self.get_json(Ks::Convs, id.as_bytes())
    }

    async fn set_title(&self, id: &str, title: Option<String>) -> StoreResult<()> {
        let id = id.to_string();
        self.writer
            .submit(move |txn| {
                let k = id.as_bytes().to_vec();
                let Some(raw) = txn.get(Ks::Convs, &k)? else {
                    return Err(StoreError::NotFound(format!("conversation {id}")));
                };
                let mut meta: ConvMeta = decode(Ks::Convs, &raw)?;
                meta.title = title;
                txn.put(Ks::Convs, k, encode(&meta));
                Ok(())
            })
            .await
    }

    async fn members(&self, conv: &str) -> StoreResult<Vec<(String, Role)>> {
        self.scan(Ks::Members, &prefix(conv))?
            .into_iter()
            .map(|(user, role)| {
                let user = String::from_utf8(user)
                    .map_err(|e| StoreError::Corrupt { keyspace: "members", detail: e.to_string() })?;
                Ok((user, decode(Ks::Members, &role)?))
            })
            .collect()
    }

    async fn put_member(&self, conv: &str, user: &str, role: Role) -> StoreResult<()> {
        let (conv, user) = (conv.to_string(), user.to_string());
        self.writer
            .submit(move |txn| {
                if txn.get(Ks::Convs, conv.as_bytes())?.is_none() {
                    return Err(StoreError::NotFound(format!("conversation {conv}")));
                }
                add_member(txn, &conv, &user, role);
                Ok(())
            })
            .await
    }

    async fn remove_member(&self, conv: &str, user: &str) -> StoreResult<()> {
        let (conv, user) = (conv.to_string(), user.to_string());
        self.writer
            .submit(move |txn| {
                txn.delete(Ks::Members, key(&[conv.as_bytes(), user.as_bytes()]));
                txn.delete(Ks::UserConvs, key(&[user.as_bytes(), conv.as_bytes()]));
                Ok(())
            })
            .await
    }

    async fn user_conversations(&self, user: &str) -> StoreResult<Vec<String>> {
        self.scan(Ks::UserConvs, &prefix(user))?
            .into_iter()
            .map(|(conv, _)| {
                String::from_utf8(conv)
                    .map_err(|e| StoreError::Corrupt { keyspace: "user_convs", detail: e.to_string() })
            })
            .collect()
    }

    async fn append_messages(&self, messages: Vec<Message>) -> StoreResult<()> {
        self.writer.submit(move |txn| write_messages(txn, &messages, None)).await
    }

    async fn claim_conversation(&self, conv: &str, owner: &str) -> StoreResult<u64> {
        let (conv, owner) = (conv.to_string(), owner.to_string());
        self.writer
            .submit(move |txn| {
                let token = fence_token(txn, &conv)? + 1;
                txn.note(&conv, Note::Fence(token));
                txn.put(Ks::Fences, conv.into_bytes(), encode(&(token, owner)));
                Ok(token)
            })
            .await
    }

    async fn append_fenced(&self, fence: u64, messages: Vec<Message>) -> StoreResult<()> {
        self.writer.submit(append_job(fence, messages, Vec::new())).await
    }

    fn append_fenced_then(self: Arc<Self>, fence: u64, messages: Vec<Message>, json: Vec<Bytes>, done: AppendDone) {
        self.writer.submit_then(append_job(fence, messages, json), done);
    }

    async fn fence(&self, conv: &str) -> StoreResult<Option<(u64, String)>> {
        read_fence(self.get_raw(Ks::Fences, conv.as_bytes())?.map(|s| s.to_vec()))
    }

    async fn update_message(&self, message: Message) -> StoreResult<()> {
        self.writer
            .submit(move |txn| {
                let k = msg_key(&message.conv, message.seq);
                if txn.get(Ks::Messages, &k)?.is_none() {
                    return Err(StoreError::NotFound(format!("message {}", message.id)));
                }
                txn.put(Ks::Messages, k, encode(&message));
                Ok(())
            })
            .await
    }

    async fn messages(&self, conv: &str, q: HistoryQuery) -> StoreResult<(Vec<Message>, bool)> {
        self.history_page(conv, q, |record| decode::<Message>(Ks::Messages, record))
    }

    async fn messages_json(&self, conv: &str, q: HistoryQuery) -> StoreResult<(Vec<Bytes>, bool)> {
        self.history_page(conv, q, record_json)
    }

    async fn message(&self, conv: &str, id: &str) -> StoreResult<Option<Message>> {
        if let Some(seq) = message_id::seq_of(id) {
            let found: Option<Message> = self.get_json(Ks::Messages, &msg_key(conv, seq))?;
            if let Some(m) = found.filter(|m| m.id == id) {
                return Ok(Some(m));
            }
        }
        match self.get_raw(Ks::MessageIds, &key(&[conv.as_bytes(), id.as_bytes()]))? {
            Some(seq) => self.get_json(Ks::Messages, &msg_key(conv, seq_of(Ks::MessageIds, &seq)?)),
            None => Ok(None),
        }
    }

    async fn last_message(&self, conv: &str) -> StoreResult<Option<Message>> {
        Ok(self.messages(conv, HistoryQuery::latest(1)).await?.0.pop())
    }

    async fn message_by_client_id(&self, conv: &str, sender: &str, client_id: &str) -> StoreResult<Option<Message>> {
        let k = key(&[conv.as_bytes(), sender.as_bytes(), client_id.as_bytes()]);
        match self.get_raw(Ks::Dedupe, &k)? {
            Some(seq) => self.get_json(Ks::Messages, &msg_key(conv, seq_of(Ks::Dedupe, &seq)?)),
            None => Ok(None),
        }
    }

    async fn count_unread(&self, conv: &str, user: &str, after_seq: u64, cap: usize) -> StoreResult<usize> {
        let lo = msg_key(conv, after_seq.saturating_add(1));
        let hi = msg_key(conv, u64::MAX);
        let mut n = 0;
        for guard in self.ks()?.get(Ks::Messages).range(lo..=hi) {
            if n >= cap {
                break;
            }
            let (_, v) = guard.into_inner().map_err(unavailable)?;
            let m: Message = decode(Ks::Messages, &v)?;
            if m.sender != user && !m.deleted {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn put_attachment(&self, record: AttachmentRecord) -> StoreResult<()> {
        self.writer
            .submit(move |txn| {
                txn.put(Ks::Attachments, record.id.as_bytes().to_vec(), encode(&record));
                Ok(())
            })
            .await
    }

    async fn attachment(&self, id: &str) -> StoreResult<Option<AttachmentRecord>> {
        self.get_json(Ks::Attachments, id.as_bytes())
    }

    async fn set_attachment_public(&self, id: &str) -> StoreResult<()> {
        let id = id.to_string();
        self.writer
            .submit(move |txn| {
                let Some(raw) = txn.get(Ks::Attachments, id.as_bytes())? else {
                    return Err(StoreError::NotFound(format!("attachment {id}")));
                };
                let mut record: AttachmentRecord = decode(Ks::Attachments, &raw)?;
                record.public = true;
                txn.put(Ks::Attachments, id.into_bytes(), encode(&record));
                Ok(())
            })
            .await
    }

    async fn attachment_conversations(&self, id: &str) -> StoreResult<Vec<String>> {
        self.scan(Ks::AttachmentConvs, &prefix(id))?
            .into_iter()
            .map(|(conv, _)| {
                String::from_utf8(conv)
                    .map_err(|e| StoreError::Corrupt { keyspace: "attachment_convs", detail: e.to_string() })
            })
            .collect()
    }

    async fn set_ban(&self, user: &str, ban: Option<Sanction>) -> StoreResult<()> {
        let user = user.as_bytes().to_vec();
        self.writer
            .submit(move |txn| {
                match ban {
                    Some(b) => txn.put(Ks::Bans, user, encode(&b)),
                    None => txn.delete(Ks::Bans, user),
                }
                Ok(())
            })
            .await
    }

    async fn bans(&self) -> StoreResult<Vec<(String, Sanction)>> {
        let mut out = Vec::new();
        for guard in self.ks()?.get(Ks::Bans).iter() {
            let (k, v) = guard.into_inner().map_err(unavailable)?;
            out.push((String::from_utf8_lossy(&k).into_owned(), decode(Ks::Bans, &v)?));
        }
        Ok(out)
    }

    async fn set_mute(&self, conv: &str, user: &str, mute: Option<Sanction>) -> StoreResult<()> {
        let k = key(&[conv.as_bytes(), user.as_bytes()]);
        self.writer
            .submit(move |txn| {
                match mute {
                    Some(m) => txn.put(Ks::Mutes, k, encode(&m)),
                    None => txn.delete(Ks::Mutes, k),
                }
                Ok(())
            })
            .await
    }

    async fn mutes(&self, conv: &str) -> StoreResult<Vec<(String, Sanction)>> {
        self.scan(Ks::Mutes, &prefix(conv))?
            .into_iter()
            .map(|(user, v)| Ok((String::from_utf8_lossy(&user).into_owned(), decode(Ks::Mutes, &v)?)))
            .collect()
    }

    async fn set_slow_mode(&self, conv: &str, seconds: u32) -> StoreResult<()> {
        let id = conv.to_string();
        self.writer
            .submit(move |txn| {
                let Some(raw) = txn.get(Ks::Convs, id.as_bytes())? else {
                    return Err(StoreError::NotFound(format!("conversation {id}")));
                };
                let mut meta: ConvMeta = decode(Ks::Convs, &raw)?;
                meta.slow_mode_s = seconds;
                txn.put(Ks::Convs, id.into_bytes(), encode(&meta));
                Ok(())
            })
            .await
    }

    async fn append_audit(&self, entry: AuditEntry) -> StoreResult<()> {
        // Keyed by time then id, so the log reads newest first with one reverse scan.
        let k = key(&[&(entry.ts as u64).to_be_bytes(), entry.id.as_bytes()]);
        self.writer
            .submit(move |txn| {
                txn.put(Ks::Audit, k, encode(&entry));
                Ok(())
            })
            .await
    }

    async fn audit(&self, before_ts: Option<i64>, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        let hi = (before_ts.unwrap_or(i64::MAX).max(0) as u64).to_be_bytes().to_vec();
        let mut out = Vec::new();
        for guard in self.ks()?.get(Ks::Audit).range(..hi).rev() {
            if out.len() == limit {
                break;
            }
            let (_, v) = guard.into_inner().map_err(unavailable)?;
            out.push(decode(Ks::Audit, &v)?);
        }
        Ok(out)
    }

    async fn list_conversations(&self, after: Option<&str>, limit: usize) -> StoreResult<Vec<ConvMeta>> {
        let start = match after {
            Some(a) => {
                let mut k = a.as_bytes().to_vec();
                k.push(0);
                k
            }
            None => Vec::new(),
        };
        let mut out = Vec::new();
        for guard in self.ks()?.get(Ks::Convs).range(start..) {
            if out.len() == limit {
                break;
            }
            let (_, v) = guard.into_inner().map_err(unavailable)?;
            out.push(decode(Ks::Convs, &v)?);
        }
        Ok(out)
    }

    async fn cursor(&self, user: &str, conv: &str) -> StoreResult<Cursor> {
        Ok(self.get_json(Ks::Cursors, &key(&[user.as_bytes(), conv.as_bytes()]))?.unwrap_or_default())
    }

    async fn advance_cursors(&self, updates: Vec<CursorUpdate>) -> StoreResult<()> {
        self.writer
            .submit(move |txn| {
                for u in &updates {
                    let k = key(&[u.user.as_bytes(), u.conv.as_bytes()]);
                    let mut c: Cursor = match txn.get(Ks::Cursors, &k)? {
                        Some(raw) => decode(Ks::Cursors, &raw)?,
                        None => Cursor::default(),
                    };
                    let before = c;
                    if let Some(d) = u.delivered_seq {
                        c.delivered_seq = c.delivered_seq.max(d);
                    }
                    if let Some(r) = u.read_seq {
                        c.read_seq = c.read_seq.max(r);
                        // Whatever was read was delivered.
                        c.delivered_seq = c.delivered_seq.max(c.read_seq);
                    }
                    if c != before {
                        txn.put(Ks::Cursors, k, encode(&c));
                    }
                }
                Ok(())
            })
            .await
    }

    async fn flush(&self) -> StoreResult<()> {
        self.writer.submit(|_| Ok(())).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.get_raw(Ks::Users, b"\0ping")?;
        match self.engine.write_refusal() {
            Some(reason) => Err(StoreError::Unavailable(format!("writes are refused: {reason}"))),
            None => Ok(()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 1024 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// A message record as the message's JSON. Records are written as [`encode_message`] writes
/// the message (updates through serde, byte for byte the same), so one that has a JSON
/// object's shape is passed on as it is; anything else is decoded, which re-encodes a record
/// that decodes and reports one that does not as corrupt.
fn record_json(record: &[u8]) -> StoreResult<Bytes> {
    if record.first() == Some(&b'{') && record.last() == Some(&b'}') {
        return Ok(Bytes::copy_from_slice(record));
    }
    decode::<Message>(Ks::Messages, record).map(|m| encode_message(&m))
}

/// The write job of a fenced append: every conversation of the batch must still be at `fence`.
fn append_job(
    fence: u64,
    messages: Vec<Message>,
    json: Vec<Bytes>,
) -> impl FnOnce(&mut Txn<'_>) -> StoreResult<()> + Send + 'static {
    let json = (json.len() == messages.len()).then_some(json);
    move |txn| {
        // Each conversation once. An append comes from one conversation's actor, so looking
        // back from the previous message settles almost every one at its first comparison.
        for (i, m) in messages.iter().enumerate() {
            if messages[..i].iter().rev().any(|p| p.conv == m.conv) {
                continue;
            }
            let current = fence_token(txn, &m.conv)?;
            if current != fence {
                return Err(StoreError::Fenced(format!(
                    "conversation {} is at fence {current}, the write carried {fence}",
                    m.conv
                )));
            }
        }
        write_messages(txn, &messages, json)
    }
}

/// Writes messages and their indexes; a message's record is its JSON, taken from `json` (as
/// [`encode_message`] wrote it) when the caller has it.
fn write_messages(txn: &mut Txn<'_>, messages: &[Message], json: Option<Vec<Bytes>>) -> StoreResult<()> {
    let mut json = json.map(Vec::into_iter);
    for m in messages {
        let record = match json.as_mut().and_then(Iterator::next) {
            Some(bytes) => Slice::new(&bytes),
            None => Slice::new(&encode_message(m)),
        };
        if message_exists(txn, &m.conv, m.seq)? {
            return Err(StoreError::Conflict(format!("seq {} in conversation {}", m.seq, m.conv)));
        }
        let seq = Slice::from(m.seq.to_be_bytes());
        // An id that carries its own seq is found from the message's key (`message`).
        if message_id::seq_of(&m.id) != Some(m.seq) {
            txn.put(Ks::MessageIds, key(&[m.conv.as_bytes(), m.id.as_bytes()]), seq.clone());
        }
        for a in &m.attachments {
            if let Some(id) = a.get("id").and_then(|v| v.as_str()) {
                txn.put(Ks::AttachmentConvs, key(&[id.as_bytes(), m.conv.as_bytes()]), Vec::new());
            }
        }
        if let Some(client_id) = &m.client_id {
            txn.put(Ks::Dedupe, key(&[m.conv.as_bytes(), m.sender.as_bytes(), client_id.as_bytes()]), seq);
        }
        txn.put(Ks::Messages, msg_key(&m.conv, m.seq), record);
        txn.note(&m.conv, Note::Appended(m.seq));
    }
    Ok(())
}

/// The fence token of `conv` as this batch sees it (0 when never claimed), from what the writer
/// remembers when it can ([`heads`]).
fn fence_token(txn: &mut Txn<'_>, conv: &str) -> StoreResult<u64> {
    if let Some(raw) = txn.pending(Ks::Fences, conv.as_bytes()) {
        return Ok(read_fence(raw.map(<[u8]>::to_vec))?.map_or(0, |(t, _)| t));
    }
    if let Some(token) = txn.heads.fence(conv) {
        return Ok(token);
    }
    let token = read_fence(txn.committed(Ks::Fences, conv.as_bytes())?)?.map_or(0, |(t, _)| t);
    txn.heads.learn_fence(conv, token);
    Ok(token)
}

/// Whether message `seq` of `conv` is stored or written by this batch. A `seq` above the
/// highest committed one is new without a read of the engine ([`heads`]).
fn message_exists(txn: &mut Txn<'_>, conv: &str, seq: u64) -> StoreResult<bool> {
    let k = msg_key(conv, seq);
    if let Some(v) = txn.pending(Ks::Messages, &k) {
        return Ok(v.is_some());
    }
    let last = match txn.heads.last_seq(conv) {
        Some(last) => last,
        None => {
            let last = match txn.last_committed_key(Ks::Messages, &msg_key(conv, 0), &msg_key(conv, u64::MAX))? {
                Some(k) => seq_of(Ks::Messages, &k[k.len() - 8..])?,
                None => 0,
            };
            txn.heads.learn_last_seq(conv, last);
            last
        }
    };
    Ok(seq <= last && txn.committed(Ks::Messages, &k)?.is_some())
}

/// Decodes a fence record: `(token, owner)`.
fn read_fence(raw: Option<Vec<u8>>) -> StoreResult<Option<(u64, String)>> {
    raw.map(|r| decode(Ks::Fences, &r)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::message;

    /// Keys are the parts joined by a 0 byte, whether they are made on the stack or, past
    /// [`STACK_KEY`], in a heap buffer.
    #[test]
    fn keys_join_their_parts_on_the_stack_and_past_it() {
        assert_eq!(&*key(&[b"conv", b"user"]), b"conv\0user");
        assert_eq!(&*key(&[b"one"]), b"one");
        assert_eq!(&*key(&[b"", b""]), b"\0");
        assert_eq!(&*msg_key("c", 258), b"c\0\0\0\0\0\0\0\x01\x02");
        for len in [STACK_KEY - 2, STACK_KEY - 1, STACK_KEY, STACK_KEY + 1, 4 * STACK_KEY] {
            let (a, b) = (vec![b'a'; len / 2], vec![b'b'; len - len / 2 - 1]);
            let k = key(&[&a, &b]);
            assert_eq!(k.len(), len);
            assert_eq!(&*k, [a.as_slice(), b"\0", &b].concat().as_slice(), "length {len}");
        }
    }

    /// A record with a JSON object's shape is passed on as stored; one without it is decoded:
    /// re-encoded when it is a message, reported corrupt when it is not.
    #[test]
    fn history_json_passes_records_on_and_checks_odd_ones() {
        let m = message("c", 3, "u", Some("k"));
        let stored = encode_message(&m);
        assert_eq!(record_json(&stored).unwrap(), stored);
        let padded = [b" ".as_slice(), &stored, b"\n"].concat();
        assert_eq!(record_json(&padded).unwrap(), stored, "re-encoded");
        assert!(matches!(record_json(b"not json"), Err(StoreError::Corrupt { .. })));
        assert!(matches!(record_json(b""), Err(StoreError::Corrupt { .. })));
    }

    /// What the seq-carrying ids save: no `message_ids` entry for them, one as before for any
    /// other id (the conformance suite checks that both are found).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_ids_without_their_seq_are_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let mut carrying = message("c", 1, "u", None);
        carrying.id = message_id::with_seq("0190f3a1c2b37d4e8a9b0c1d2e3f4a5b", 1);
        let plain = message("c", 2, "u", None);
        store.append_messages(vec![carrying.clone(), plain.clone()]).await.unwrap();
        let indexed = |id: &str| store.get_raw(Ks::MessageIds, &key(&[b"c", id.as_bytes()])).unwrap().is_some();
        assert!(!indexed(&carrying.id));
        assert!(indexed(&plain.id));
        assert_eq!(store.message("c", &carrying.id).await.unwrap(), Some(carrying));
    }
}
