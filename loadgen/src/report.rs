//! Results: per-connection tallies merged into one report, the delivery check, the summary
//! table and the JSON file.

use std::collections::{BTreeMap, HashMap};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::ranges::{MessageSet, RangeSet};

/// Latency percentiles in milliseconds.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let ms = |v: u64| v as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// A new histogram of microseconds, 1 µs to 1 h, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// What one connection saw.
pub struct ConnTally {
    pub conn: u32,
    pub sent: u64,
    /// Message numbers of this connection's sends that were acked (all sends for targets
    /// without acks).
    pub acked: RangeSet,
    pub received: MessageSet,
    /// Messages first received while a `sync` was being answered.
    pub via_sync: MessageSet,
    pub duplicates: u64,
    pub reordered: u64,
    pub errors: HashMap<String, u64>,
    pub ack_latency: Histogram<u64>,
    pub e2e_latency: Histogram<u64>,
    pub reconnects: u64,
    /// Sends repeated on a new connection because the old one dropped before their answer.
    pub resent: u64,
}

impl ConnTally {
    pub fn new(conn: u32) -> Self {
        ConnTally {
            conn,
            sent: 0,
            acked: RangeSet::default(),
            received: MessageSet::default(),
            via_sync: MessageSet::default(),

            duplicates: 0,
            reordered: 0,
            errors: HashMap::new(),
            ack_latency: histogram(),
            e2e_latency: histogram(),
            reconnects: 0,
            resent: 0,
        }
    }
}

/// Delivery check results.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Verify {
    pub expected: u64,
    pub missing: u64,
    pub duplicated: u64,
    /// `seq` going backwards on a connection, or not increasing in a stored history.
    pub reordered: u64,
    /// Acked messages absent from their conversation's stored history (Rookery only).
    pub lost: u64,
    /// Extra copies of a message (same sender, same `client_id`) in a stored history.
    pub stored_twice: u64,
}

impl Verify {
    /// Whether the delivery guarantee held.
    pub fn passed(&self) -> bool {
        self.missing + self.duplicated + self.reordered + self.lost + self.stored_twice == 0
    }
}

/// Every conversation's stored history, read at the end of a `--verify` run.
#[derive(Debug, Default, Clone)]
pub struct Stored {
    /// By room: the (sender connection, message number) of every stored message.
    pub rooms: Vec<MessageSet>,
    /// Extra copies: messages stored again under the same (sender, message number).
    pub twice: u64,
    /// Times `seq` did not increase from one stored message to the next.
    pub out_of_order: u64,
}

/// The whole report.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub scenario: String,
    pub connections: u64,
    pub duration_s: f64,
    pub offered_msgs_per_s: f64,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    pub delivery_ratio: f64,
    pub msgs_per_s: f64,
    pub deliveries_per_s: f64,
    pub ack: Latency,
    pub e2e: Latency,
    pub errors: BTreeMap<String, u64>,
    pub reconnects: u64,
    pub resent: u64,
    pub verify: Option<Verify>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryReport>,
}

/// Connect-storm results.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ConnectReport {
    pub established: u64,
    pub failed: u64,
    pub per_s: f64,
    pub latency: Latency,
}

/// Idle-connection results.
#[derive(Debug, Default, Clone, Serialize)]
pub struct IdleReport {
    pub established: u64,
    pub server_rss_before: Option<u64>,
    pub server_rss_after: Option<u64>,
    pub bytes_per_connection: Option<f64>,
}

/// History-read results.
#[derive(Debug, Default, Clone, Serialize)]
pub struct HistoryReport {
    /// `http` pages or WebSocket `sync` replays.
    pub via: crate::HistoryVia,
    pub pages: u64,
    pub pages_per_s: f64,
    /// Messages the pages held.
    pub messages: u64,
    pub messages_per_s: f64,
    pub latency: Latency,
}

/// Merges the tallies of a messaging run. `members[room]` lists the connections of each room,
/// `room_of_sender[conn]` the room a connection sends to, and `stored` the histories read back
/// (for `lost` and `stored_twice`).
pub fn merge(
    tallies: &[ConnTally],
    members: &[Vec<u32>],
    room_of_sender: &[Option<usize>],
    verify: bool,
    stored: Option<&Stored>,
    report: &mut Report,
) {
    let mut ack = histogram();
    let mut e2e = histogram();
    for t in tallies {
        report.sent += t.sent;
        report.acked += t.acked.len();
        report.delivered += t.received.len();
        report.reconnects += t.reconnects;
        report.resent += t.resent;
        ack.add(&t.ack_latency).expect("same bounds");
        e2e.add(&t.e2e_latency).expect("same bounds");
        for (code, n) in &t.errors {
            *report.errors.entry(code.clone()).or_default() += n;
        }
    }
    report.ack = Latency::from_histogram(&ack);
    report.e2e = Latency::from_histogram(&e2e);
    let by_conn: HashMap<u32, &ConnTally> = tallies.iter().map(|t| (t.conn, t)).collect();
    let mut expected = 0u64;
    let mut missing = 0u64;
    let mut lost = 0u64;
    for t in tallies {
        let Some(room) = room_of_sender.get(t.conn as usize).copied().flatten() else {
            continue;
        };
        let recipients: Vec<&ConnTally> =
            members[room].iter().filter(|c| **c != t.conn).filter_map(|c| by_conn.get(c).copied()).collect();
        expected += t.acked.len() * recipients.len() as u64;
        if verify {
            for k in t.acked.iter() {
                missing += recipients.iter().filter(|r| !r.received.contains(&(t.conn, k))).count() as u64;
            }
        }
        if let Some(history) = stored.and_then(|s| s.rooms.get(room)) {
            lost += t.acked.iter().filter(|k| !history.contains(&(t.conn, *k))).count() as u64;
        }
    }
    report.delivery_ratio =
        if expected == 0 { 1.0 } else { (expected - missing.min(expected)) as f64 / expected as f64 };
    if !verify {
        // Without the per-message check, the ratio is the count of unique deliveries.
        report.delivery_ratio = if expected == 0 { 1.0 } else { (report.delivered as f64 / expected as f64).min(1.0) };
    }
    if verify {
        report.verify = Some(Verify {
            expected,
            missing,
            duplicated: tallies.iter().map(|t| t.duplicates).sum(),
            reordered: tallies.iter().map(|t| t.reordered).sum::<u64>() + stored.map_or(0, |s| s.out_of_order),
            lost,
            stored_twice: stored.map_or(0, |s| s.twice),
        });
    }
    if report.duration_s > 0.0 {
        report.msgs_per_s = report.acked as f64 / report.duration_s;
        report.deliveries_per_s = report.delivered as f64 / report.duration_s;
    }
}

/// The summary table printed at the end.
pub fn print_summary(r: &Report) {
    println!();
    println!(
        "target {}  scenario {}  connections {}  duration {:.1} s",
        r.target, r.scenario, r.connections, r.duration_s
    );
    if r.sent > 0 || r.acked > 0 {
        println!("  offered        {:>12.0} msgs/s", r.offered_msgs_per_s);
        println!("  sent           {:>12}", r.sent);
        println!("  acked          {:>12}   {:>10.0} msgs/s", r.acked, r.msgs_per_s);
        println!("  delivered      {:>12}   {:>10.0} deliveries/s", r.delivered, r.deliveries_per_s);
        println!("  delivery ratio {:>12.4}", r.delivery_ratio);
        let row = |name: &str, l: &Latency| {
            println!(
                "  {name:<14} p50 {:>8.2} ms  p99 {:>8.2} ms  p999 {:>8.2} ms  max {:>8.2} ms  (n={})",
                l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
            )
        };
        row("ack latency", &r.ack);
        row("end-to-end", &r.e2e);
    }
    if let Some(c) = &r.connect {
        println!(
            "  connect        {} established, {} failed, {:.0} conn/s, p50 {:.2} ms p99 {:.2} ms",
            c.established, c.failed, c.per_s, c.latency.p50_ms, c.latency.p99_ms
        );
    }
    if let Some(i) = &r.idle {
        println!("  idle           {} connections held", i.established);
        if let (Some(b), Some(a), Some(per)) = (i.server_rss_before, i.server_rss_after, i.bytes_per_connection) {
            println!("  server RSS     {} → {} bytes ({per:.0} bytes per connection)", b, a);
        }
    }
    if let Some(h) = &r.history {
        println!(
            "  history        {} {} pages, {:.0} pages/s, {:.0} messages/s, p50 {:.2} ms p99 {:.2} ms",
            h.pages,
            match h.via {
                crate::HistoryVia::Http => "http",
                crate::HistoryVia::Ws => "sync",
            },
            h.pages_per_s,
            h.messages_per_s,
            h.latency.p50_ms,
            h.latency.p99_ms
        );
    }
    if r.reconnects > 0 {
        println!("  reconnects     {}  (resent after a drop: {})", r.reconnects, r.resent);
    }
    if !r.errors.is_empty() {
        println!("  errors         {:?}", r.errors);
    }
    if let Some(v) = &r.verify {
        println!(
            "  verify         expected {}  missing {}  duplicated {}  reordered {}  lost {}  stored twice {}",
            v.expected, v.missing, v.duplicated, v.reordered, v.lost, v.stored_twice
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_history_counts_lost_and_twice_stored_messages() {
        // Room 0: connection 0 sends, connection 1 receives.
        let mut sender = ConnTally::new(0);
        sender.acked = [0, 1, 2].into_iter().collect();
        let mut receiver = ConnTally::new(1);
        receiver.received = [(0, 0), (0, 1), (0, 2)].into_iter().collect();
        // (0, 1) is stored twice, (0, 2) not at all, (0, 3) was never acked.
        let stored = Stored { rooms: vec![[(0, 0), (0, 1), (0, 3)].into_iter().collect()], twice: 1, out_of_order: 1 };
        let mut report = Report::default();
        merge(&[sender, receiver], &[vec![0, 1]], &[Some(0), None], true, Some(&stored), &mut report);
        let v = report.verify.unwrap();
        assert_eq!((v.lost, v.stored_twice, v.reordered, v.missing), (1, 1, 1, 0), "{v:?}");
        assert!(!v.passed());
    }
}
