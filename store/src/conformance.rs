//! The store conformance suite: what the node relies on from any backend.
//!
//! Every backend runs [`run_all`] from its own test (the embedded one in `tests/embedded.rs`;
//! the ScyllaDB one when `ROOKERY_TEST_SCYLLA` names a node). Each check uses fresh ids, so the
//! suite can run against a store that already holds data. A failed check panics with what was
//! expected.

use std::sync::Arc;

use rookery_protocol::{ConversationKind, Message, Role, User};

use crate::{
    message_id, ConvMeta, CursorUpdate, HistoryQuery, RefreshRecord, RefreshUse, Store, StoreError, UserRecord,
};

fn fresh(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}{nanos:x}{}", N.fetch_add(1, Ordering::Relaxed))
}

fn user(name: &str) -> UserRecord {
    UserRecord {
        user: User {
            id: fresh("u"),
            username: name.to_string(),
            display_name: name.to_string(),
            avatar: None,
            created_at: 1,
        },
        password_hash: "$argon2id$fake".into(),
        deleted: false,
    }
}

fn group(id: &str) -> ConvMeta {
    ConvMeta {
        id: id.to_string(),
        kind: ConversationKind::Group,
        title: Some("t".into()),
        created_at: 1,
        slow_mode_s: 0,
    }
}

/// A message for tests.
pub fn message(conv: &str, seq: u64, sender: &str, client_id: Option<&str>) -> Message {
    Message {
        id: format!("{conv}-m{seq}"),
        conv: conv.to_string(),
        seq,
        sender: sender.to_string(),
        ts: seq as i64,
        body: format!("body {seq}"),
        attachments: vec![],
        client_id: client_id.map(str::to_string),
        edited_at: None,
        deleted: false,
    }
}

/// Runs every check against `store`.
pub async fn run_all(store: Arc<dyn Store>) {
    users(&*store).await;
    user_search(&*store).await;
    user_deletion(&*store).await;

    refresh_tokens(&*store).await;
    conversations(&*store).await;
    direct_conversations_are_unique_under_concurrency(store.clone()).await;
    history_pages(&*store).await;
    history_as_json(&*store).await;
    dedupe_and_seq_conflicts(&*store).await;
    messages_found_by_id(&*store).await;
    fencing(&*store).await;
    concurrent_claims_give_distinct_fences(store.clone()).await;
    appends_answered_by_callback(store.clone()).await;
    edits(&*store).await;
    cursors(&*store).await;
    attachments(&*store).await;
    moderation(&*store).await;

    concurrent_appends_keep_every_message(store.clone()).await;
    store.flush().await.expect("flush");
    store.ping().await.expect("ping");
}

/// Usernames are unique; users are found by id and by name; profiles update.
pub async fn users(store: &dyn Store) {
    let name = fresh("name");
    let rec = user(&name);
    store.create_user(rec.clone()).await.unwrap();
    let mut dup = user(&name);
    dup.user.id = fresh("other");
    assert!(matches!(store.create_user(dup.clone()).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.user(&dup.user.id).await.unwrap(), None, "a refused signup stores nothing");
    assert_eq!(store.user(&rec.user.id).await.unwrap(), Some(rec.clone()));
    assert_eq!(store.user_by_name(&name).await.unwrap(), Some(rec.clone()));
    assert_eq!(store.user_by_name(&fresh("nobody")).await.unwrap(), None);
    let mut changed = rec.user.clone();
    changed.display_name = "New Name".into();
    store.update_user(changed).await.unwrap();
    assert_eq!(store.user(&rec.user.id).await.unwrap().unwrap().user.display_name, "New Name");
    let mut missing = rec.user.clone();
    missing.id = fresh("missing");
    assert!(matches!(store.update_user(missing).await, Err(StoreError::NotFound(_))));
}

/// A deleted account leaves a tombstone: no password, no username, out of search; the name is
/// free again; deleting twice is harmless; deleting nobody is `NotFound`.
pub async fn user_deletion(store: &dyn Store) {
    let name = fresh("gone");
    let rec = user(&name);
    store.create_user(rec.clone()).await.unwrap();
    store.delete_user(&rec.user.id).await.unwrap();
    let tomb = store.user(&rec.user.id).await.unwrap().expect("the tombstone stays");
    assert!(tomb.deleted);
    assert_eq!(tomb, rec.tombstone());
    assert!(tomb.password_hash.is_empty());
    assert_eq!(store.user_by_name(&name).await.unwrap(), None, "the username no longer leads to it");
    let (found, _) = store.search_users(&name, None, 10).await.unwrap();
    assert!(found.is_empty(), "a deleted user is out of search: {found:?}");
    store.delete_user(&rec.user.id).await.unwrap();
    assert_eq!(store.user(&rec.user.id).await.unwrap(), Some(tomb), "deleting again changes nothing");
    let mut again = user(&name);
    again.user.id = fresh("again");
    store.create_user(again.clone()).await.unwrap();
    assert_eq!(store.user_by_name(&name).await.unwrap(), Some(again), "the name is free for someone new");
    assert!(matches!(store.delete_user(&fresh("nobody")).await, Err(StoreError::NotFound(_))));
}

/// Refresh tokens are single use; reuse revokes the user's tokens; expiry and revocation hold.
pub async fn refresh_tokens(store: &dyn Store) {
    let uid = fresh("u");
    let live = |exp| RefreshRecord { user_id: uid.clone(), expires_at_ms: exp, used: false };
    let (t1, t2, t3) = (fresh("h"), fresh("h"), fresh("h"));
    store.put_refresh(&t1, live(1_000)).await.unwrap();
    store.put_refresh(&t2, live(1_000)).await.unwrap();
    assert!(matches!(store.use_refresh(&t1, 10).await.unwrap(), RefreshUse::Valid(r) if r.user_id == uid));
    assert_eq!(store.use_refresh(&t1, 10).await.unwrap(), RefreshUse::Reused);
    assert_eq!(store.use_refresh(&t2, 10).await.unwrap(), RefreshUse::Invalid, "reuse revokes the user's other tokens");
    store.put_refresh(&t3, live(100)).await.unwrap();
    assert_eq!(store.use_refresh(&t3, 100).await.unwrap(), RefreshUse::Invalid, "expired");
    let t4 = fresh("h");
    store.put_refresh(&t4, live(1_000)).await.unwrap();
    store.revoke_refresh(&t4).await.unwrap();
    assert_eq!(store.use_refresh(&t4, 10).await.unwrap(), RefreshUse::Invalid);
    let t5 = fresh("h");
    store.put_refresh(&t5, live(1_000)).await.unwrap();
    store.revoke_user_refresh(&uid).await.unwrap();
    assert_eq!(store.use_refresh(&t5, 10).await.unwrap(), RefreshUse::Invalid);
    assert_eq!(store.use_refresh(&fresh("unknown"), 10).await.unwrap(), RefreshUse::Invalid);
}

/// Groups keep their members and roles; members come and go; a user lists their conversations.
pub async fn conversations(store: &dyn Store) {
    let (a, b, c) = (fresh("a"), fresh("b"), fresh("c"));
    let id = fresh("g");
    store.create_conversation(group(&id), vec![(a.clone(), Role::Owner), (b.clone(), Role::Member)]).await.unwrap();
    assert!(matches!(store.create_conversation(group(&id), vec![]).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.conversation(&id).await.unwrap(), Some(group(&id)));
    let mut members = store.members(&id).await.unwrap();
    members.sort();
    assert_eq!(members, vec![(a.clone(), Role::Owner), (b.clone(), Role::Member)]);
    store.put_member(&id, &c, Role::Admin).await.unwrap();
    store.remove_member(&id, &b).await.unwrap();
    let mut members = store.members(&id).await.unwrap();
    members.sort();
    assert_eq!(members, vec![(a.clone(), Role::Owner), (c.clone(), Role::Admin)]);
    assert_eq!(store.user_conversations(&c).await.unwrap(), vec![id.clone()]);
    assert!(store.user_conversations(&b).await.unwrap().is_empty());
    assert!(matches!(store.put_member(&fresh("nope"), &c, Role::Member).await, Err(StoreError::NotFound(_))));
    store.set_title(&id, Some("renamed".into())).await.unwrap();
    assert_eq!(store.conversation(&id).await.unwrap().unwrap().title.as_deref(), Some("renamed"));
    assert_eq!(store.conversation(&fresh("none")).await.unwrap(), None);
}

/// Many concurrent requests for the same pair produce one conversation.
pub async fn direct_conversations_are_unique_under_concurrency(store: Arc<dyn Store>) {
    let (a, b) = (fresh("a"), fresh("b"));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (store, a, b) = (store.clone(), a.clone(), b.clone());
        tasks.push(tokio::spawn(async move {
            let proposed =
                ConvMeta { id: fresh("d"), kind: ConversationKind::Direct, title: None, created_at: 1, slow_mode_s: 0 };
            // Alternate the argument order: the pair is unordered.
            if i % 2 == 0 {
                store.direct_conversation(&a, &b, proposed).await.unwrap()
            } else {
                store.direct_conversation(&b, &a, proposed).await.unwrap()
            }
        }));
    }
    let mut ids = Vec::new();
    let mut created = 0;
    for t in tasks {
        let (meta, new) = t.await.unwrap();
        created += new as usize;
        ids.push(meta.id);
    }
    assert_eq!(created, 1, "exactly one request creates the direct conversation");
    ids.dedup();
    assert_eq!(ids.len(), 1, "every request gets the same conversation");
    let mut members = store.members(&ids[0]).await.unwrap();
    members.sort();
    let mut want = vec![(a, Role::Member), (b, Role::Member)];
    want.sort();
    assert_eq!(members, want);
}

/// History pages by `seq` in both directions and reports `has_more`.
pub async fn history_pages(store: &dyn Store) {
    let conv = fresh("h");
    let other = fresh("h");
    let batch: Vec<Message> = (1..=25).map(|s| message(&conv, s, "u", None)).collect();
    store.append_messages(batch).await.unwrap();
    store.append_messages(vec![message(&other, 1, "u", None)]).await.unwrap();
    let seqs = |ms: &[Message]| ms.iter().map(|m| m.seq).collect::<Vec<_>>();

    let (page, more) = store.messages(&conv, HistoryQuery::latest(10)).await.unwrap();
    assert_eq!(seqs(&page), (16..=25).collect::<Vec<_>>());
    assert!(more);
    let (page, more) = store.messages(&conv, HistoryQuery::before(16, 10)).await.unwrap();
    assert_eq!(seqs(&page), (6..=15).collect::<Vec<_>>());
    assert!(more);
    let (page, more) = store.messages(&conv, HistoryQuery::before(6, 10)).await.unwrap();
    assert_eq!(seqs(&page), (1..=5).collect::<Vec<_>>());
    assert!(!more);
    let (page, more) = store.messages(&conv, HistoryQuery::after(0, 10)).await.unwrap();
    assert_eq!(seqs(&page), (1..=10).collect::<Vec<_>>());
    assert!(more);
    let (page, more) = store.messages(&conv, HistoryQuery::after(20, 10)).await.unwrap();
    assert_eq!(seqs(&page), (21..=25).collect::<Vec<_>>());
    assert!(!more);
    let between = HistoryQuery { after_seq: Some(3), before_seq: Some(7), limit: 10 };
    assert_eq!(seqs(&store.messages(&conv, between).await.unwrap().0), vec![4, 5, 6]);
    assert!(store.messages(&conv, HistoryQuery::before(0, 10)).await.unwrap().0.is_empty());
    assert_eq!(store.last_message(&conv).await.unwrap().unwrap().seq, 25);
    assert_eq!(store.last_message(&fresh("empty")).await.unwrap(), None);
    assert_eq!(store.message(&conv, &format!("{conv}-m7")).await.unwrap().unwrap().seq, 7);
    assert_eq!(store.count_unread(&conv, "someone", 20, 100).await.unwrap(), 5);
    assert_eq!(store.count_unread(&conv, "someone", 0, 3).await.unwrap(), 3, "capped");
    assert_eq!(store.count_unread(&conv, "u", 0, 100).await.unwrap(), 0, "own messages are never unread");
}

/// `messages_json` gives each message of a page as `encode_message` writes it, after edits and
/// deletes too, with the same pages and `has_more` as `messages`.
pub async fn history_as_json(store: &dyn Store) {
    let conv = fresh("j");
    let mut batch: Vec<Message> = (1..=6).map(|s| message(&conv, s, "u", Some(&format!("c{s}")))).collect();
    batch[1].body = "quotes \" and \\ backslashes, a tab\t, é, 😀 and \u{1}".into();
    batch[2].attachments = vec![serde_json::json!({"id": "a1", "name": "x.png", "size": 3})];
    batch[3].client_id = None;
    store.append_messages(batch).await.unwrap();
    let mut edited = store.messages(&conv, HistoryQuery::after(4, 1)).await.unwrap().0.remove(0);
    edited.body = "edited \"again\"".into();
    edited.edited_at = Some(9);
    store.update_message(edited).await.unwrap();
    let mut deleted = store.messages(&conv, HistoryQuery::after(5, 1)).await.unwrap().0.remove(0);
    deleted.body.clear();
    deleted.deleted = true;
    store.update_message(deleted).await.unwrap();

    let between = HistoryQuery { after_seq: Some(1), before_seq: Some(6), limit: 10 };
    for query in [HistoryQuery::latest(4), HistoryQuery::after(0, 10), HistoryQuery::before(3, 10), between] {
        let (messages, more) = store.messages(&conv, query).await.unwrap();
        let (json, json_more) = store.messages_json(&conv, query).await.unwrap();
        let expected: Vec<_> = messages.iter().map(rookery_protocol::encode_message).collect();
        assert_eq!(json, expected, "{query:?}");
        assert_eq!(json_more, more, "{query:?}");
        for (bytes, m) in json.iter().zip(&messages) {
            assert_eq!(&serde_json::from_slice::<Message>(bytes).unwrap(), m);
        }
    }
    let (json, _) = store.messages_json(&conv, HistoryQuery::after(4, 2)).await.unwrap();
    let edited: Message = serde_json::from_slice(&json[0]).unwrap();
    assert_eq!((edited.body.as_str(), edited.edited_at), ("edited \"again\"", Some(9)));
    assert!(serde_json::from_slice::<Message>(&json[1]).unwrap().deleted);
    assert!(store.messages_json(&conv, HistoryQuery::before(0, 10)).await.unwrap().0.is_empty());
}

/// `client_id` finds the original message; a taken `seq` is refused and writes nothing.
pub async fn dedupe_and_seq_conflicts(store: &dyn Store) {
    let conv = fresh("c");
    store.append_messages(vec![message(&conv, 1, "alice", Some("k1"))]).await.unwrap();
    let found = store.message_by_client_id(&conv, "alice", "k1").await.unwrap().unwrap();
    assert_eq!(found.seq, 1);
    assert_eq!(store.message_by_client_id(&conv, "bob", "k1").await.unwrap(), None, "dedupe is per sender");
    let mut clash = message(&conv, 1, "bob", Some("k2"));
    clash.id = "other-id".into();
    assert!(matches!(store.append_messages(vec![clash]).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.message_by_client_id(&conv, "bob", "k2").await.unwrap(), None, "a refused append writes nothing");
    assert_eq!(store.message(&conv, "other-id").await.unwrap(), None);
    assert_eq!(store.messages(&conv, HistoryQuery::latest(10)).await.unwrap().0.len(), 1);
}

/// A message is found by its id whatever the id's shape: one that carries its own `seq`
/// ([`crate::message_id`]), one that carries none, and one that names the `seq` of another
/// message. The `seq` an id carries is only a hint.
pub async fn messages_found_by_id(store: &dyn Store) {
    let conv = fresh("i");
    let mut carrying = message(&conv, 1, "u", Some("k1"));
    carrying.id = message_id::with_seq(&fresh("m"), 1);
    let plain = message(&conv, 2, "u", Some("k2"));
    assert_eq!(message_id::seq_of(&plain.id), None);
    let mut elsewhere = message(&conv, 3, "u", Some("k3"));
    elsewhere.id = message_id::with_seq(&fresh("m"), 1);
    store.append_messages(vec![carrying.clone(), plain.clone(), elsewhere.clone()]).await.unwrap();
    assert_eq!(store.message(&conv, &carrying.id).await.unwrap(), Some(carrying.clone()));
    assert_eq!(store.message(&conv, &plain.id).await.unwrap(), Some(plain));
    assert_eq!(store.message(&conv, &elsewhere.id).await.unwrap(), Some(elsewhere), "names seq 1, stored at 3");
    let unknown = message_id::with_seq(&fresh("m"), 1);
    assert_eq!(store.message(&conv, &unknown).await.unwrap(), None, "seq 1 holds another id");
    let beyond = message_id::with_seq(&fresh("m"), 9);
    assert_eq!(store.message(&conv, &beyond).await.unwrap(), None, "nothing at seq 9");
    assert_eq!(store.message(&fresh("i"), &carrying.id).await.unwrap(), None, "ids are per conversation");
    let mut edited = carrying.clone();
    edited.body = "edited".into();
    edited.edited_at = Some(5);
    store.update_message(edited.clone()).await.unwrap();
    assert_eq!(store.message(&conv, &carrying.id).await.unwrap(), Some(edited), "an edit keeps the id");
}

/// A claim raises the fence; writes with an older fence are refused and write nothing, so a
/// deposed owner can never assign `seq` beside the new one.
pub async fn fencing(store: &dyn Store) {
    let conv = fresh("f");
    assert_eq!(store.fence(&conv).await.unwrap(), None);
    let old = store.claim_conversation(&conv, "node-a").await.unwrap();
    assert_eq!(store.fence(&conv).await.unwrap(), Some((old, "node-a".to_string())));
    store.append_fenced(old, vec![message(&conv, 1, "u", Some("k1"))]).await.unwrap();
    let new = store.claim_conversation(&conv, "node-b").await.unwrap();
    assert!(new > old, "claims raise the fence");
    assert_eq!(store.fence(&conv).await.unwrap(), Some((new, "node-b".to_string())));
    let late = store.append_fenced(old, vec![message(&conv, 2, "u", Some("k2"))]).await;
    assert!(matches!(late, Err(StoreError::Fenced(_))), "{late:?}");
    assert_eq!(store.message_by_client_id(&conv, "u", "k2").await.unwrap(), None, "a fenced write writes nothing");
    assert_eq!(store.last_message(&conv).await.unwrap().unwrap().seq, 1);
    store.append_fenced(new, vec![message(&conv, 2, "u", Some("k3"))]).await.unwrap();
    assert_eq!(store.last_message(&conv).await.unwrap().unwrap().seq, 2);
    let other = fresh("f");
    assert!(
        matches!(store.append_fenced(new, vec![message(&other, 1, "u", None)]).await, Err(StoreError::Fenced(_))),
        "a fence is per conversation"
    );
}

/// `append_fenced_then` answers through its callback exactly as `append_fenced` would, and
/// stores what the caller encoded (the message reads back equal to what was sent).
pub async fn appends_answered_by_callback(store: Arc<dyn Store>) {
    async fn append(store: &Arc<dyn Store>, fence: u64, messages: Vec<Message>) -> Result<(), StoreError> {
        let json = messages.iter().map(rookery_protocol::encode_message).collect();
        let (tx, rx) = tokio::sync::oneshot::channel();
        store.clone().append_fenced_then(fence, messages, json, Box::new(move |r| drop(tx.send(r))));
        rx.await.expect("the callback is called")
    }
    let conv = fresh("cb");
    let token = store.claim_conversation(&conv, "node-a").await.unwrap();
    let mut m = message(&conv, 1, "u", Some("k1"));
    m.body = "with \"quotes\" and \u{1F600}".into();
    m.attachments = vec![serde_json::json!({"id": "a1", "name": "x.png"})];
    append(&store, token, vec![m.clone()]).await.unwrap();
    assert_eq!(store.message_by_client_id(&conv, "u", "k1").await.unwrap(), Some(m.clone()));
    assert_eq!(store.message(&conv, &m.id).await.unwrap(), Some(m));
    let taken = append(&store, token, vec![message(&conv, 1, "u", Some("k2"))]).await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    let newer = store.claim_conversation(&conv, "node-b").await.unwrap();
    let stale = append(&store, token, vec![message(&conv, 2, "u", Some("k3"))]).await;
    assert!(matches!(stale, Err(StoreError::Fenced(_))), "{stale:?}");
    append(&store, newer, vec![message(&conv, 2, "u", Some("k3")), message(&conv, 3, "u", None)]).await.unwrap();
    assert_eq!(store.last_message(&conv).await.unwrap().unwrap().seq, 3);
}

/// Claims racing from many tasks each get their own token; only the last one may write.
pub async fn concurrent_claims_give_distinct_fences(store: Arc<dyn Store>) {
    let conv = fresh("fc");
    let claims = (0..16).map(|i| {
        let (store, conv) = (store.clone(), conv.clone());
        tokio::spawn(async move { store.claim_conversation(&conv, &format!("n{i}")).await.unwrap() })
    });
    let mut tokens: Vec<u64> = futures_join(claims).await;
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 16, "every claim got a distinct token");
    let last = *tokens.last().unwrap();
    assert_eq!(store.fence(&conv).await.unwrap().unwrap().0, last);
    for t in &tokens[..15] {
        let r = store.append_fenced(*t, vec![message(&conv, 1, "u", None)]).await;
        assert!(matches!(r, Err(StoreError::Fenced(_))), "token {t}: {r:?}");
    }
    store.append_fenced(last, vec![message(&conv, 1, "u", None)]).await.unwrap();
}

async fn futures_join<T: Send + 'static>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

/// Edits and deletes replace the stored message.
pub async fn edits(store: &dyn Store) {
    let conv = fresh("e");
    store.append_messages(vec![message(&conv, 1, "u", None)]).await.unwrap();
    let mut m = store.message(&conv, &format!("{conv}-m1")).await.unwrap().unwrap();
    m.body = "edited".into();
    m.edited_at = Some(5);
    store.update_message(m.clone()).await.unwrap();
    assert_eq!(store.messages(&conv, HistoryQuery::latest(1)).await.unwrap().0, vec![m.clone()]);
    let ghost = message(&conv, 9, "u", None);
    assert!(matches!(store.update_message(ghost).await, Err(StoreError::NotFound(_))));
}

/// Cursors only move forward; reading implies delivery.
pub async fn cursors(store: &dyn Store) {
    let (u, c) = (fresh("u"), fresh("c"));
    assert_eq!(store.cursor(&u, &c).await.unwrap(), Default::default());
    let up = |d: Option<u64>, r: Option<u64>| CursorUpdate {
        user: u.clone(),
        conv: c.clone(),
        delivered_seq: d,
        read_seq: r,
    };
    store.advance_cursors(vec![up(Some(5), None)]).await.unwrap();
    store.advance_cursors(vec![up(Some(3), Some(2))]).await.unwrap();
    let cur = store.cursor(&u, &c).await.unwrap();
    assert_eq!((cur.delivered_seq, cur.read_seq), (5, 2));
    store.advance_cursors(vec![up(None, Some(9)), up(None, Some(4))]).await.unwrap();
    let cur = store.cursor(&u, &c).await.unwrap();
    assert_eq!((cur.delivered_seq, cur.read_seq), (9, 9));
}

/// Appends racing from many tasks (as group commit batches them) all land, none twice.
pub async fn concurrent_appends_keep_every_message(store: Arc<dyn Store>) {
    let convs: Vec<String> = (0..8).map(|_| fresh("p")).collect();
    let mut tasks = Vec::new();
    for conv in &convs {
        for seq in 1..=50u64 {
            let (store, conv) = (store.clone(), conv.clone());
            tasks.push(tokio::spawn(async move {
                store.append_messages(vec![message(&conv, seq, "u", Some(&format!("k{seq}")))]).await
            }));
        }
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for conv in &convs {
        let (page, more) = store.messages(conv, HistoryQuery::after(0, 500)).await.unwrap();
        assert!(!more);
        assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), (1..=50).collect::<Vec<_>>());
    }
}

/// Users are found by username or display-name prefix, case-insensitively, page by page.
pub async fn user_search(store: &dyn Store) {
    let tag = fresh("s");
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut r = user(&format!("{tag}user{i}"));
        r.user.display_name = format!("Person {i}");
        ids.push(r.user.id.clone());
        store.create_user(r).await.unwrap();
    }
    let mut named = user(&format!("{tag}zed"));
    named.user.display_name = format!("{tag}ZedDisplay").to_uppercase();
    store.create_user(named.clone()).await.unwrap();
    let (page, next) = store.search_users(&format!("{tag}user"), None, 3).await.unwrap();
    assert_eq!(page.len(), 3);
    let (rest, last) = store.search_users(&format!("{tag}user"), next.as_deref(), 3).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(last, None);
    let mut all: Vec<String> = page.iter().chain(&rest).map(|u| u.id.clone()).collect();
    all.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(all, want, "every match exactly once across pages");
    // Display names match case-insensitively.
    let (found, _) = store.search_users(&format!("{tag}zeddis"), None, 10).await.unwrap();
    assert_eq!(found.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), vec![named.user.id.as_str()]);
    // A renamed user is found by the new name only.
    let mut renamed = named.user.clone();
    renamed.display_name = format!("{tag}Other");
    store.update_user(renamed).await.unwrap();
    assert!(store.search_users(&format!("{tag}zeddis"), None, 10).await.unwrap().0.is_empty());
    assert_eq!(store.search_users(&format!("{tag}oth"), None, 10).await.unwrap().0.len(), 1);
    assert!(store.search_users(&fresh("nomatch"), None, 10).await.unwrap().0.is_empty());
}

/// Attachments keep their metadata, become public on request, and remember where they were shared.
pub async fn attachments(store: &dyn Store) {
    let id = fresh("att");
    let record = crate::AttachmentRecord {
        id: id.clone(),
        uploader: "u".into(),
        name: "cat.png".into(),
        content_type: "image/png".into(),
        size: 3,
        created_at: 1,
        public: false,
    };
    store.put_attachment(record.clone()).await.unwrap();
    assert_eq!(store.attachment(&id).await.unwrap(), Some(record.clone()));
    assert!(store.attachment_conversations(&id).await.unwrap().is_empty());
    let conv = fresh("c");
    let mut m = message(&conv, 1, "u", None);
    m.attachments = vec![record.to_message_json(), serde_json::json!({"kind": "call"})];
    store.append_messages(vec![m]).await.unwrap();
    assert_eq!(store.attachment_conversations(&id).await.unwrap(), vec![conv]);
    store.set_attachment_public(&id).await.unwrap();
    assert!(store.attachment(&id).await.unwrap().unwrap().public);
    assert!(matches!(store.set_attachment_public(&fresh("none")).await, Err(StoreError::NotFound(_))));
    assert_eq!(store.attachment(&fresh("none")).await.unwrap(), None);
}

/// Bans, mutes, slow mode and the audit log persist and read back as written.
pub async fn moderation(store: &dyn Store) {
    let user = fresh("u");
    let ban = crate::Sanction {
        reason: "spam".into(),
        by: "admin".into(),
        at_ms: 10,
        until_ms: Some(100),
        account_deleted: false,
    };
    store.set_ban(&user, Some(ban.clone())).await.unwrap();
    assert!(store.bans().await.unwrap().contains(&(user.clone(), ban.clone())));
    assert!(ban.active(99) && !ban.active(100));
    store.set_ban(&user, None).await.unwrap();
    assert!(!store.bans().await.unwrap().iter().any(|(u, _)| *u == user));

    let conv = fresh("c");
    store.create_conversation(group(&conv), vec![(user.clone(), Role::Member)]).await.unwrap();
    let mute = crate::Sanction {
        reason: "shouting".into(),
        by: "admin".into(),
        at_ms: 1,
        until_ms: None,
        account_deleted: false,
    };
    store.set_mute(&conv, &user, Some(mute.clone())).await.unwrap();
    assert_eq!(store.mutes(&conv).await.unwrap(), vec![(user.clone(), mute)]);
    store.set_mute(&conv, &user, None).await.unwrap();
    assert!(store.mutes(&conv).await.unwrap().is_empty());
    store.set_slow_mode(&conv, 30).await.unwrap();
    assert_eq!(store.conversation(&conv).await.unwrap().unwrap().slow_mode_s, 30);
    assert!(matches!(store.set_slow_mode(&fresh("none"), 5).await, Err(StoreError::NotFound(_))));
    assert!(store.list_conversations(None, 1_000_000).await.unwrap().iter().any(|c| c.id == conv));
    let page = store.list_conversations(None, 1).await.unwrap();
    let next = store.list_conversations(Some(&page[0].id), 1).await.unwrap();
    assert!(next.is_empty() || next[0].id > page[0].id);

    let base = 1_000_000_000_000 + (fresh("").len() as i64);
    let entries: Vec<crate::AuditEntry> = (0..3)
        .map(|i| crate::AuditEntry {
            id: fresh("a"),
            ts: base + i,
            admin: "admin".into(),
            action: "kick".into(),
            target: user.clone(),
            reason: format!("r{i}"),
            details: serde_json::Value::Null,
        })
        .collect();
    for e in &entries {
        store.append_audit(e.clone()).await.unwrap();
    }
    let newest = store.audit(Some(base + 3), 2).await.unwrap();
    assert_eq!(newest, vec![entries[2].clone(), entries[1].clone()], "newest first");
    assert_eq!(store.audit(Some(base + 1), 10).await.unwrap()[0], entries[0]);
}
