//! The ScyllaDB schema, as numbered migrations the node applies at start.
//!
//! `schema_version` records the migrations applied; a node applies the missing ones in order
//! (each statement is idempotent: `IF NOT EXISTS`), then waits for schema agreement. Never
//! change a published migration: add a new one.

/// Keyspace and table names are identifiers; only these characters are accepted.
pub fn valid_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 48
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
}

/// `CREATE KEYSPACE` with the replication map given (for example
/// `{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}`).
pub fn create_keyspace(keyspace: &str, replication: &str) -> String {
    format!("CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication}")
}

/// The bookkeeping table of migrations.
pub fn create_version_table(keyspace: &str) -> String {
    format!("CREATE TABLE IF NOT EXISTS {keyspace}.schema_version (version int PRIMARY KEY, applied_at bigint)")
}

/// Every migration, oldest first: `(version, statements)`, `{ks}` standing for the keyspace.
pub const MIGRATIONS: &[(i32, &[&str])] = &[(
    1,
    &[
        "CREATE TABLE IF NOT EXISTS {ks}.users (id text PRIMARY KEY, record text)",
        "CREATE TABLE IF NOT EXISTS {ks}.usernames (username text PRIMARY KEY, user_id text)",
        // Prefix search: one partition per first character of the term, terms clustered.
        "CREATE TABLE IF NOT EXISTS {ks}.user_search (initial text, term text, user_id text, \
         PRIMARY KEY (initial, term, user_id))",
        "CREATE TABLE IF NOT EXISTS {ks}.refresh (hash text PRIMARY KEY, user_id text, expires_at bigint, used boolean)",
        "CREATE TABLE IF NOT EXISTS {ks}.user_refresh (user_id text, hash text, PRIMARY KEY (user_id, hash))",
        "CREATE TABLE IF NOT EXISTS {ks}.convs (id text PRIMARY KEY, meta text)",
        // Conversation ids in id order, spread over CONV_SHARDS partitions (console browsing).
        "CREATE TABLE IF NOT EXISTS {ks}.conv_index (shard int, id text, PRIMARY KEY (shard, id))",
        "CREATE TABLE IF NOT EXISTS {ks}.members (conv text, user_id text, role text, PRIMARY KEY (conv, user_id))",
        "CREATE TABLE IF NOT EXISTS {ks}.user_convs (user_id text, conv text, PRIMARY KEY (user_id, conv))",
        "CREATE TABLE IF NOT EXISTS {ks}.directs (pair text PRIMARY KEY, conv text)",
        // History, Discord's shape: a partition per (conversation, bucket), clustered by seq.
        "CREATE TABLE IF NOT EXISTS {ks}.messages (conv text, bucket bigint, seq bigint, msg text, \
         PRIMARY KEY ((conv, bucket), seq)) WITH CLUSTERING ORDER BY (seq ASC)",
        "CREATE TABLE IF NOT EXISTS {ks}.message_ids (conv text, id text, seq bigint, PRIMARY KEY ((conv, id)))",
        // The highest bucket written (a hint: it never exceeds the truth).
        "CREATE TABLE IF NOT EXISTS {ks}.conv_last (conv text PRIMARY KEY, bucket bigint)",
        "CREATE TABLE IF NOT EXISTS {ks}.dedupe (conv text, sender text, client_id text, seq bigint, \
         PRIMARY KEY ((conv, sender, client_id)))",
        "CREATE TABLE IF NOT EXISTS {ks}.fences (conv text PRIMARY KEY, token bigint, owner text)",
        "CREATE TABLE IF NOT EXISTS {ks}.cursors (user_id text, conv text, delivered_seq bigint, read_seq bigint, \
         PRIMARY KEY (user_id, conv))",
        "CREATE TABLE IF NOT EXISTS {ks}.attachments (id text PRIMARY KEY, record text)",
        "CREATE TABLE IF NOT EXISTS {ks}.attachment_convs (id text, conv text, PRIMARY KEY (id, conv))",
        // Bans are few and read whole at start: one partition.
        "CREATE TABLE IF NOT EXISTS {ks}.bans (shard int, user_id text, ban text, PRIMARY KEY (shard, user_id))",
        "CREATE TABLE IF NOT EXISTS {ks}.mutes (conv text, user_id text, mute text, PRIMARY KEY (conv, user_id))",
        // The audit log by day, newest first, and the days that have entries.
        "CREATE TABLE IF NOT EXISTS {ks}.audit (day bigint, ts bigint, id text, entry text, \
         PRIMARY KEY (day, ts, id)) WITH CLUSTERING ORDER BY (ts DESC, id DESC)",
        "CREATE TABLE IF NOT EXISTS {ks}.audit_days (shard int, day bigint, PRIMARY KEY (shard, day)) \
         WITH CLUSTERING ORDER BY (day DESC)",
    ],
)];

/// The statements of migration `version` for `keyspace`.
pub fn statements(keyspace: &str, stmts: &[&str]) -> Vec<String> {
    stmts.iter().map(|s| s.replace("{ks}", keyspace)).collect()
}

/// The newest schema version this build knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_ordered_idempotent_and_name_the_keyspace() {
        let mut last = 0;
        for (v, stmts) in MIGRATIONS {
            assert!(*v > last, "versions must increase");
            last = *v;
            for s in statements("rk", stmts) {
                assert!(s.contains("IF NOT EXISTS"), "not idempotent: {s}");
                assert!(s.contains(" rk."), "no keyspace: {s}");
                assert!(!s.contains("{ks}"));
                assert_eq!(s.matches('(').count(), s.matches(')').count(), "unbalanced: {s}");
            }
        }
        assert_eq!(latest(), last);
    }

    #[test]
    fn history_is_partitioned_by_conversation_and_bucket() {
        let messages = MIGRATIONS[0].1.iter().find(|s| s.contains(".messages (")).unwrap();
        assert!(messages.contains("PRIMARY KEY ((conv, bucket), seq)"));
    }

    #[test]
    fn identifiers_and_keyspace_text() {
        assert!(valid_identifier("rookery"));
        assert!(valid_identifier("rookery_prod2"));
        for bad in ["", "1abc", "a-b", "a;drop", "a b", &"x".repeat(49)] {
            assert!(!valid_identifier(bad), "{bad}");
        }
        let ks = create_keyspace("rookery", "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}");
        assert_eq!(
            ks,
            "CREATE KEYSPACE IF NOT EXISTS rookery WITH replication = \
             {'class': 'NetworkTopologyStrategy', 'replication_factor': 3}"
        );
    }
}
