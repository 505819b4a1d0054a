//! Once a second the console samples the node's counters into a short history (two minutes),
//! for the overview's rates, latency percentiles and live charts.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use rookery_actors::{now_ms, Metrics};
use serde::Serialize;

/// Samples kept (one per second).
const KEEP: usize = 120;

/// One second of the node's activity.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    pub t_ms: i64,
    pub connections: i64,
    pub received_per_s: f64,
    pub delivered_per_s: f64,
    /// Ack latency percentiles over this second (0 when nothing was acked).
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
}

/// The sampled history.
#[derive(Default)]
pub struct Samples {
    ring: Mutex<VecDeque<Sample>>,
}

impl Samples {
    /// Starts sampling `metrics` every second until the returned `Arc` is dropped.
    pub fn start(metrics: Arc<Metrics>) -> Arc<Samples> {
        let samples = Arc::new(Samples::default());
        let weak: Weak<Samples> = Arc::downgrade(&samples);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut prev = Counters::read(&metrics);
            loop {
                tick.tick().await;
                let Some(samples) = weak.upgrade() else { return };
                let now = Counters::read(&metrics);
                let (p50, p99) = percentiles(&prev.ack_buckets, &now.ack_buckets);
                let sample = Sample {
                    t_ms: now_ms(),
                    connections: metrics.ws_connections.get(),
                    received_per_s: now.received.saturating_sub(prev.received) as f64,
                    delivered_per_s: now.delivered.saturating_sub(prev.delivered) as f64,
                    ack_p50_ms: p50 * 1000.0,
                    ack_p99_ms: p99 * 1000.0,
                };
                let mut ring = samples.ring.lock();
                ring.push_back(sample);
                while ring.len() > KEEP {
                    ring.pop_front();
                }
                prev = now;
            }
        });
        samples
    }

    /// Oldest first.
    pub fn series(&self) -> Vec<Sample> {
        self.ring.lock().iter().cloned().collect()
    }
}

struct Counters {
    received: u64,
    delivered: u64,
    /// (upper bound in seconds, cumulative count)
    ack_buckets: Vec<(f64, u64)>,
}

impl Counters {
    fn read(m: &Metrics) -> Self {
        use prometheus::core::Collector;
        let mut ack_buckets = Vec::new();
        for family in m.message_ack_seconds.collect() {
            for metric in family.get_metric() {
                for b in metric.get_histogram().get_bucket() {
                    ack_buckets.push((b.upper_bound(), b.cumulative_count()));
                }
            }
        }
        Counters { received: m.messages_received.get(), delivered: m.messages_delivered.get(), ack_buckets }
    }
}

/// p50 and p99 (seconds, bucket upper bounds) of what was observed between two readings.
fn percentiles(before: &[(f64, u64)], after: &[(f64, u64)]) -> (f64, f64) {
    let deltas: Vec<(f64, u64)> =
        after.iter().zip(before).map(|((bound, a), (_, b))| (*bound, a.saturating_sub(*b))).collect();
    let total = deltas.last().map_or(0, |d| d.1);
    if total == 0 {
        return (0.0, 0.0);
    }
    let q = |q: f64| deltas.iter().find(|(_, c)| *c as f64 >= q * total as f64).map_or(0.0, |(b, _)| *b);
    (q(0.5), q(0.99))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_window_only() {
        let before = vec![(0.001, 100), (0.01, 100), (0.1, 100)];
        let after = vec![(0.001, 100), (0.01, 150), (0.1, 200)];
        assert_eq!(percentiles(&before, &after), (0.01, 0.1));
        let after = vec![(0.001, 190), (0.01, 199), (0.1, 200)];
        assert_eq!(percentiles(&before, &after), (0.001, 0.01));
        assert_eq!(percentiles(&before, &before), (0.0, 0.0));
    }
}
