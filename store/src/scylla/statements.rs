//! Every CQL statement of the ScyllaDB store, prepared once at connect.
//!
//! Texts live in [`TEXTS`] (with `{ks}` for the keyspace) so tests can check them without a
//! server. Settings per statement: the configured consistency; lightweight transactions (`IF`)
//! and the serial fence read also get the serial consistency; reads of whole partitions are paged
//! by [`PAGE_SIZE`](super::PAGE_SIZE); writes that can be repeated safely are marked idempotent
//! (the driver may then retry them on another replica).

use std::collections::HashMap;

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};

use super::{unavailable, ScyllaOptions, PAGE_SIZE};
use crate::StoreResult;

/// `(name, CQL)` of every statement.
pub const TEXTS: &[(&str, &str)] = &[
    ("put_member", "INSERT INTO {ks}.members (conv, user_id, role) VALUES (?, ?, ?)"),
    ("put_user_conv", "INSERT INTO {ks}.user_convs (user_id, conv) VALUES (?, ?)"),
    ("put_conv", "INSERT INTO {ks}.convs (id, meta) VALUES (?, ?)"),
    ("put_conv_index", "INSERT INTO {ks}.conv_index (shard, id) VALUES (?, ?)"),
    ("get_fence", "SELECT token, owner FROM {ks}.fences WHERE conv = ?"),
    ("get_fence_serial", "SELECT token, owner FROM {ks}.fences WHERE conv = ?"),
    ("put_message_id", "INSERT INTO {ks}.message_ids (conv, id, seq) VALUES (?, ?, ?)"),
    ("put_dedupe", "INSERT INTO {ks}.dedupe (conv, sender, client_id, seq) VALUES (?, ?, ?, ?)"),
    ("put_attachment_conv", "INSERT INTO {ks}.attachment_convs (id, conv) VALUES (?, ?)"),
    ("insert_message", "INSERT INTO {ks}.messages (conv, bucket, seq, msg) VALUES (?, ?, ?, ?) IF NOT EXISTS"),
    ("put_conv_last", "INSERT INTO {ks}.conv_last (conv, bucket) VALUES (?, ?)"),
    ("get_message", "SELECT msg FROM {ks}.messages WHERE conv = ? AND bucket = ? AND seq = ?"),
    ("get_conv_last", "SELECT bucket FROM {ks}.conv_last WHERE conv = ?"),
    ("probe_bucket", "SELECT seq FROM {ks}.messages WHERE conv = ? AND bucket = ? LIMIT 1"),
    ("user_refresh_of", "SELECT hash FROM {ks}.user_refresh WHERE user_id = ?"),
    ("delete_refresh", "DELETE FROM {ks}.refresh WHERE hash = ?"),
    ("delete_user_refresh_all", "DELETE FROM {ks}.user_refresh WHERE user_id = ?"),
    ("claim_username", "INSERT INTO {ks}.usernames (username, user_id) VALUES (?, ?) IF NOT EXISTS"),
    ("put_user", "INSERT INTO {ks}.users (id, record) VALUES (?, ?)"),
    ("put_search", "INSERT INTO {ks}.user_search (initial, term, user_id) VALUES (?, ?, ?)"),
    ("get_user", "SELECT record FROM {ks}.users WHERE id = ?"),
    ("get_username", "SELECT user_id FROM {ks}.usernames WHERE username = ?"),
    ("release_username", "DELETE FROM {ks}.usernames WHERE username = ? IF user_id = ?"),
    ("delete_search", "DELETE FROM {ks}.user_search WHERE initial = ? AND term = ? AND user_id = ?"),
    ("search", "SELECT term, user_id FROM {ks}.user_search WHERE initial = ? AND (term, user_id) > (?, ?) AND (term) < (?) LIMIT ?"),
    ("put_refresh", "INSERT INTO {ks}.refresh (hash, user_id, expires_at, used) VALUES (?, ?, ?, ?)"),
    ("put_user_refresh", "INSERT INTO {ks}.user_refresh (user_id, hash) VALUES (?, ?)"),
    ("get_refresh", "SELECT user_id, expires_at, used FROM {ks}.refresh WHERE hash = ?"),
    ("use_refresh", "UPDATE {ks}.refresh SET used = true WHERE hash = ? IF used = false"),
    ("delete_user_refresh", "DELETE FROM {ks}.user_refresh WHERE user_id = ? AND hash = ?"),
    ("claim_direct", "INSERT INTO {ks}.directs (pair, conv) VALUES (?, ?) IF NOT EXISTS"),
    ("get_direct", "SELECT conv FROM {ks}.directs WHERE pair = ?"),
    ("get_conv", "SELECT meta FROM {ks}.convs WHERE id = ?"),
    ("members_of", "SELECT user_id, role FROM {ks}.members WHERE conv = ?"),
    ("delete_member", "DELETE FROM {ks}.members WHERE conv = ? AND user_id = ?"),
    ("delete_user_conv", "DELETE FROM {ks}.user_convs WHERE user_id = ? AND conv = ?"),
    ("convs_of", "SELECT conv FROM {ks}.user_convs WHERE user_id = ?"),
    ("claim_fence_first", "INSERT INTO {ks}.fences (conv, token, owner) VALUES (?, ?, ?) IF NOT EXISTS"),
    ("claim_fence", "UPDATE {ks}.fences SET token = ?, owner = ? WHERE conv = ? IF token = ?"),
    ("update_message", "UPDATE {ks}.messages SET msg = ? WHERE conv = ? AND bucket = ? AND seq = ?"),
    ("range_asc", "SELECT msg FROM {ks}.messages WHERE conv = ? AND bucket = ? AND seq >= ? AND seq <= ? ORDER BY seq ASC LIMIT ?"),
    ("range_desc", "SELECT msg FROM {ks}.messages WHERE conv = ? AND bucket = ? AND seq >= ? AND seq <= ? ORDER BY seq DESC LIMIT ?"),
    ("get_message_id", "SELECT seq FROM {ks}.message_ids WHERE conv = ? AND id = ?"),
    ("get_dedupe", "SELECT seq FROM {ks}.dedupe WHERE conv = ? AND sender = ? AND client_id = ?"),
    ("put_attachment", "INSERT INTO {ks}.attachments (id, record) VALUES (?, ?)"),
    ("get_attachment", "SELECT record FROM {ks}.attachments WHERE id = ?"),
    ("attachment_convs_of", "SELECT conv FROM {ks}.attachment_convs WHERE id = ?"),
    ("put_ban", "INSERT INTO {ks}.bans (shard, user_id, ban) VALUES (?, ?, ?)"),
    ("delete_ban", "DELETE FROM {ks}.bans WHERE shard = ? AND user_id = ?"),
    ("all_bans", "SELECT user_id, ban FROM {ks}.bans WHERE shard = ?"),
    ("put_mute", "INSERT INTO {ks}.mutes (conv, user_id, mute) VALUES (?, ?, ?)"),
    ("delete_mute", "DELETE FROM {ks}.mutes WHERE conv = ? AND user_id = ?"),
    ("mutes_of", "SELECT user_id, mute FROM {ks}.mutes WHERE conv = ?"),
    ("put_audit", "INSERT INTO {ks}.audit (day, ts, id, entry) VALUES (?, ?, ?, ?)"),
    ("put_audit_day", "INSERT INTO {ks}.audit_days (shard, day) VALUES (?, ?)"),
    ("audit_days_upto", "SELECT day FROM {ks}.audit_days WHERE shard = ? AND day <= ?"),
    ("audit_before", "SELECT entry FROM {ks}.audit WHERE day = ? AND ts < ? LIMIT ?"),
    ("conv_index_after", "SELECT id FROM {ks}.conv_index WHERE shard = ? AND id > ? LIMIT ?"),
    ("get_cursor", "SELECT delivered_seq, read_seq FROM {ks}.cursors WHERE user_id = ? AND conv = ?"),
    ("init_cursor", "INSERT INTO {ks}.cursors (user_id, conv, delivered_seq, read_seq) VALUES (?, ?, 0, 0) IF NOT EXISTS"),
    ("raise_delivered", "UPDATE {ks}.cursors SET delivered_seq = ? WHERE user_id = ? AND conv = ? IF delivered_seq < ?"),
    ("raise_read", "UPDATE {ks}.cursors SET read_seq = ? WHERE user_id = ? AND conv = ? IF read_seq < ?"),
    ("ping", "SELECT release_version FROM system.local"),
];

/// The prepared statements.
pub struct Stmts {
    pub consistency: Consistency,
    pub serial: SerialConsistency,
    pub put_member: PreparedStatement,
    pub put_user_conv: PreparedStatement,
    pub put_conv: PreparedStatement,
    pub put_conv_index: PreparedStatement,
    pub get_fence: PreparedStatement,
    pub get_fence_serial: PreparedStatement,
    pub put_message_id: PreparedStatement,
    pub put_dedupe: PreparedStatement,
    pub put_attachment_conv: PreparedStatement,
    pub insert_message: PreparedStatement,
    pub put_conv_last: PreparedStatement,
    pub get_message: PreparedStatement,
    pub get_conv_last: PreparedStatement,
    pub probe_bucket: PreparedStatement,
    pub user_refresh_of: PreparedStatement,
    pub delete_refresh: PreparedStatement,
    pub delete_user_refresh_all: PreparedStatement,
    pub claim_username: PreparedStatement,
    pub put_user: PreparedStatement,
    pub put_search: PreparedStatement,
    pub get_user: PreparedStatement,
    pub get_username: PreparedStatement,
    pub release_username: PreparedStatement,
    pub delete_search: PreparedStatement,
    pub search: PreparedStatement,
    pub put_refresh: PreparedStatement,
    pub put_user_refresh: PreparedStatement,
    pub get_refresh: PreparedStatement,
    pub use_refresh: PreparedStatement,
    pub delete_user_refresh: PreparedStatement,
    pub claim_direct: PreparedStatement,
    pub get_direct: PreparedStatement,
    pub get_conv: PreparedStatement,
    pub members_of: PreparedStatement,
    pub delete_member: PreparedStatement,
    pub delete_user_conv: PreparedStatement,
    pub convs_of: PreparedStatement,
    pub claim_fence_first: PreparedStatement,
    pub claim_fence: PreparedStatement,
    pub update_message: PreparedStatement,
    pub range_asc: PreparedStatement,
    pub range_desc: PreparedStatement,
    pub get_message_id: PreparedStatement,
    pub get_dedupe: PreparedStatement,
    pub put_attachment: PreparedStatement,
    pub get_attachment: PreparedStatement,
    pub attachment_convs_of: PreparedStatement,
    pub put_ban: PreparedStatement,
    pub delete_ban: PreparedStatement,
    pub all_bans: PreparedStatement,
    pub put_mute: PreparedStatement,
    pub delete_mute: PreparedStatement,
    pub mutes_of: PreparedStatement,
    pub put_audit: PreparedStatement,
    pub put_audit_day: PreparedStatement,
    pub audit_days_upto: PreparedStatement,
    pub audit_before: PreparedStatement,
    pub conv_index_after: PreparedStatement,
    pub get_cursor: PreparedStatement,
    pub init_cursor: PreparedStatement,
    pub raise_delivered: PreparedStatement,
    pub raise_read: PreparedStatement,
    pub ping: PreparedStatement,
}

struct Prepared(HashMap<&'static str, PreparedStatement>);

impl Prepared {
    fn get(&self, name: &str) -> StoreResult<PreparedStatement> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| crate::StoreError::Unavailable(format!("statement {name} not prepared")))
    }
}

/// Whether a statement is a lightweight transaction.
pub fn is_lwt(cql: &str) -> bool {
    cql.contains(" IF ")
}

/// Whether repeating the statement cannot change its outcome (plain writes of fixed values
/// and every read; not LWTs).
pub fn is_idempotent(cql: &str) -> bool {
    !is_lwt(cql)
}

impl Stmts {
    pub async fn prepare(session: &Session, o: &ScyllaOptions) -> StoreResult<Stmts> {
        let mut map = HashMap::new();
        for (name, text) in TEXTS {
            let cql = text.replace("{ks}", &o.keyspace);
            let mut st = session.prepare(cql.as_str()).await.map_err(unavailable)?;
            st.set_page_size(PAGE_SIZE);
            st.set_is_idempotent(is_idempotent(&cql));
            if *name == "get_fence_serial" || *name == "get_direct" {
                // Reads that must see every completed lightweight transaction.
                st.set_consistency(match o.serial_consistency {
                    SerialConsistency::Serial => Consistency::Serial,
                    SerialConsistency::LocalSerial => Consistency::LocalSerial,
                });
            } else {
                st.set_consistency(o.consistency);
            }
            if is_lwt(&cql) {
                st.set_serial_consistency(Some(o.serial_consistency));
            }
            map.insert(*name, st);
        }
        let p = Prepared(map);
        Ok(Stmts {
            consistency: o.consistency,
            serial: o.serial_consistency,
            put_member: p.get("put_member")?,
            put_user_conv: p.get("put_user_conv")?,
            put_conv: p.get("put_conv")?,
            put_conv_index: p.get("put_conv_index")?,
            get_fence: p.get("get_fence")?,
            get_fence_serial: p.get("get_fence_serial")?,
            put_message_id: p.get("put_message_id")?,
            put_dedupe: p.get("put_dedupe")?,
            put_attachment_conv: p.get("put_attachment_conv")?,
            insert_message: p.get("insert_message")?,
            put_conv_last: p.get("put_conv_last")?,
            get_message: p.get("get_message")?,
            get_conv_last: p.get("get_conv_last")?,
            probe_bucket: p.get("probe_bucket")?,
            user_refresh_of: p.get("user_refresh_of")?,
            delete_refresh: p.get("delete_refresh")?,
            delete_user_refresh_all: p.get("delete_user_refresh_all")?,
            claim_username: p.get("claim_username")?,
            put_user: p.get("put_user")?,
            put_search: p.get("put_search")?,
            get_user: p.get("get_user")?,
            get_username: p.get("get_username")?,
            release_username: p.get("release_username")?,
            delete_search: p.get("delete_search")?,
            search: p.get("search")?,
            put_refresh: p.get("put_refresh")?,
            put_user_refresh: p.get("put_user_refresh")?,
            get_refresh: p.get("get_refresh")?,
            use_refresh: p.get("use_refresh")?,
            delete_user_refresh: p.get("delete_user_refresh")?,
            claim_direct: p.get("claim_direct")?,
            get_direct: p.get("get_direct")?,
            get_conv: p.get("get_conv")?,
            members_of: p.get("members_of")?,
            delete_member: p.get("delete_member")?,
            delete_user_conv: p.get("delete_user_conv")?,
            convs_of: p.get("convs_of")?,
            claim_fence_first: p.get("claim_fence_first")?,
            claim_fence: p.get("claim_fence")?,
            update_message: p.get("update_message")?,
            range_asc: p.get("range_asc")?,
            range_desc: p.get("range_desc")?,
            get_message_id: p.get("get_message_id")?,
            get_dedupe: p.get("get_dedupe")?,
            put_attachment: p.get("put_attachment")?,
            get_attachment: p.get("get_attachment")?,
            attachment_convs_of: p.get("attachment_convs_of")?,
            put_ban: p.get("put_ban")?,
            delete_ban: p.get("delete_ban")?,
            all_bans: p.get("all_bans")?,
            put_mute: p.get("put_mute")?,
            delete_mute: p.get("delete_mute")?,
            mutes_of: p.get("mutes_of")?,
            put_audit: p.get("put_audit")?,
            put_audit_day: p.get("put_audit_day")?,
            audit_days_upto: p.get("audit_days_upto")?,
            audit_before: p.get("audit_before")?,
            conv_index_after: p.get("conv_index_after")?,
            get_cursor: p.get("get_cursor")?,
            init_cursor: p.get("init_cursor")?,
            raise_delivered: p.get("raise_delivered")?,
            raise_read: p.get("raise_read")?,
            ping: p.get("ping")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_names_its_table_in_the_keyspace_and_is_unique() {
        let mut names = std::collections::HashSet::new();
        for (name, text) in TEXTS {
            assert!(names.insert(*name), "duplicate {name}");
            assert!(text.contains("{ks}.") || text.contains("system.local"), "{name}: {text}");
            assert!(!text.contains(';'), "{name}: one statement each");
        }
    }

    #[test]
    fn reads_are_bounded_or_partition_scoped() {
        for (name, text) in TEXTS {
            if text.starts_with("SELECT") && !text.contains("system.local") {
                assert!(text.contains(" WHERE "), "{name} reads without a partition key: {text}");
                assert!(!text.contains("ALLOW FILTERING"), "{name}");
            }
        }
    }

    #[test]
    fn clustering_restrictions_do_not_mix_single_and_multi_column_relations() {
        for (name, text) in TEXTS {
            if text.contains(") > (") || text.contains(") < (") {
                for single in [" term < ", " term > ", " user_id > ", " user_id < "] {
                    assert!(!text.contains(single), "{name} mixes relation kinds: {text}");
                }
            }
        }
    }

    #[test]
    fn uniqueness_rules_use_lightweight_transactions() {
        let lwt: Vec<&str> = TEXTS.iter().filter(|(_, t)| is_lwt(t)).map(|(n, _)| *n).collect();
        for must in
            ["claim_username", "claim_direct", "use_refresh", "claim_fence_first", "claim_fence", "insert_message"]
        {
            assert!(lwt.contains(&must), "{must} must be conditional");
        }
        assert!(!is_idempotent("INSERT INTO x (a) VALUES (?) IF NOT EXISTS"));
        assert!(is_idempotent("INSERT INTO x (a) VALUES (?)"));
    }

    #[test]
    fn placeholders_match_the_values_bound() {
        // The number of `?` in each statement, as the store binds them.
        let expect: &[(&str, usize)] = &[
            ("search", 5),
            ("range_asc", 5),
            ("range_desc", 5),
            ("claim_fence", 4),
            ("insert_message", 4),
            ("raise_delivered", 4),
            ("raise_read", 4),
            ("init_cursor", 2),
            ("put_refresh", 4),
            ("audit_before", 3),
            ("conv_index_after", 3),
            ("get_dedupe", 3),
            ("put_dedupe", 4),
            ("update_message", 4),
            ("ping", 0),
        ];
        for (name, n) in expect {
            let text = TEXTS.iter().find(|(k, _)| k == name).unwrap().1;
            assert_eq!(text.matches('?').count(), *n, "{name}: {text}");
        }
    }
}
