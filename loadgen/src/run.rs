//! Running a scenario: connections, the open-loop senders, readers, reconnects, and the final
//! merge into a report.
//!
//! Open loop: connection `i` sends message `k` at `start + phase_i + k / rate`, fixed in
//! advance. A late send goes out as soon as it can, and its latency is still measured from its
//! intended time, so a stalled server cannot hide its stall by slowing the load down.
//!
//! Node restarts: a dropped Rookery connection reconnects with a growing wait, `sync`s, and
//! sends again, with the same `client_id`, every message it had sent without getting an answer
//! (the node stores a `client_id` once and answers a repeat with the original ack). With
//! `--verify`, each conversation's stored history is read at the end to count acked messages
//! that are not there and messages stored twice.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use fastwebsockets::{Frame, OpCode, Payload};
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

use crate::ranges::MessageSet;
use crate::report::{self, ConnTally, ConnectReport, HistoryReport, IdleReport, Latency, Report};
use crate::setup::{self, Plan};
use crate::target::{Incoming, Target};
use crate::ws;
use crate::{HistoryVia, Opts, Scenario};

/// State every task of a run shares.
struct Shared {
    opts: Opts,
    plan: Plan,
    room_index: HashMap<String, usize>,
    addrs: Vec<SocketAddr>,
    epoch: Instant,
    stop_sending: AtomicBool,
    /// Sends that passed the `stop_sending` check and are still being counted: the drain
    /// starts once none is, so it never begins before the last message sent is counted
    /// (with `stop_sending`, a Dekker-style hand-off; both are `SeqCst`).
    counting_sends: AtomicU64,
    stop_all: AtomicBool,
    /// Wakes waiters at both stops (sending, then everything).
    stop_notify: Notify,
    /// Wakes the readers at the last stop only: a reader is not interrupted in the middle of a
    /// frame while deliveries still arrive.
    stop_all_notify: Notify,
    sent: AtomicU64,
    acked: AtomicU64,
    /// Sends answered by an ack or an error: the drain waits until it reaches `sent`.
    answered: AtomicU64,
    expected: AtomicU64,
    delivered: AtomicU64,
    errors: AtomicU64,
    connected: AtomicU64,
}

impl Shared {
    /// Ends the run: every task stops (the drain is over).
    fn stop_everything(&self) {
        self.stop_all.store(true, Ordering::Relaxed);
        self.stop_notify.notify_waiters();
        self.stop_all_notify.notify_waiters();
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn source(&self, conn: usize) -> Option<IpAddr> {
        let n = self.opts.source_addrs.max(1);
        let loopback = self.addrs.iter().all(|a| a.ip().is_loopback());
        (loopback && n > 1).then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (conn % n as usize) as u8)))
    }

    /// The intended send time of message `k` of connection `conn`, ns since the epoch.
    fn intended_ns(&self, conn: usize, k: u64, start_ns: u64) -> u64 {
        let interval = 1e9 / self.opts.rate.max(1e-9);
        let phase = (conn as f64 * 0.618_033_988_7).fract() * interval;
        start_ns + (phase + k as f64 * interval) as u64
    }
}

/// First wait before reconnecting a dropped connection; it doubles on each failed attempt up to
/// [`RECONNECT_MAX_WAIT`], plus a per-connection share so that connections dropped together do
/// not all come back in the same instant.
const RECONNECT_FIRST_WAIT: Duration = Duration::from_millis(50);
const RECONNECT_MAX_WAIT: Duration = Duration::from_secs(2);

/// Messages a connection sent and got no answer (ack or error) for yet, by number.
type Unanswered = Arc<Mutex<BTreeSet<u64>>>;

/// Runs the scenario of `opts` and returns its report.
pub async fn run(opts: Opts) -> anyhow::Result<Report> {
    let addrs = opts.url.iter().map(|u| ws::socket_addr(u)).collect::<anyhow::Result<Vec<_>>>()?;
    let plan = setup::plan(&opts).await?;
    let room_index = plan.rooms.iter().enumerate().map(|(i, r)| (r.clone(), i)).collect();
    let shared = Arc::new(Shared {
        opts: opts.clone(),
        plan,
        room_index,
        addrs,
        epoch: Instant::now(),
        stop_sending: AtomicBool::new(false),
        counting_sends: AtomicU64::new(0),
        stop_all: AtomicBool::new(false),
        stop_notify: Notify::new(),
        stop_all_notify: Notify::new(),
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        expected: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        connected: AtomicU64::new(0),
    });
    let mut report = Report {
        target: format!("{:?}", opts.target).to_lowercase(),
        scenario: serde_json::to_value(opts.scenario)?.as_str().unwrap_or_default().to_string(),
        connections: opts.users as u64,
        ..Default::default()
    };
    match opts.scenario {
        Scenario::ConnectStorm => report.connect = Some(connect_storm(&shared).await),
        Scenario::History => {
            report.history = Some(history(&shared).await?);
            report.duration_s = opts.duration;
        }
        _ => messaging(&shared, &mut report).await?,
    }
    Ok(report)
}

fn progress(shared: &Arc<Shared>, what: &'static str) -> tokio::task::JoinHandle<()> {
    let shared = shared.clone();
    tokio::spawn(async move {
        if shared.opts.quiet {
            return;
        }
        let bar = indicatif::ProgressBar::new_spinner();
        let started = Instant::now();
        let mut last = (0u64, Instant::now());
        while !shared.stop_all.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let delivered = shared.delivered.load(Ordering::Relaxed);
            let rate = (delivered - last.0) as f64 / last.1.elapsed().as_secs_f64();
            last = (delivered, Instant::now());
            bar.set_message(format!(
                "{what} {:>6.1}s  conns {}  sent {}  acked {}  delivered {} ({:.0}/s)  errors {}",
                started.elapsed().as_secs_f64(),
                shared.connected.load(Ordering::Relaxed),
                shared.sent.load(Ordering::Relaxed),
                shared.acked.load(Ordering::Relaxed),
                delivered,
                rate,
                shared.errors.load(Ordering::Relaxed),
            ));
            bar.tick();
        }
        bar.finish_and_clear();
    })
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

async fn messaging(shared: &Arc<Shared>, report: &mut Report) -> anyhow::Result<()> {
    let opts = &shared.opts;
    let rss_before = opts.server_pid.and_then(rss_bytes);
    let ticker = progress(shared, "running");
    let n = shared.plan.conns.len();
    let start_ns = shared.now_ns() + (opts.ramp * 1e9) as u64 + 200_000_000;
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move { connection(shared, i, start_ns).await }));
    }
    let senders = shared.plan.conns.iter().filter(|c| c.sends_to.is_some()).count();
    let rate = if opts.scenario == Scenario::Idle { 0.0 } else { opts.rate };
    report.offered_msgs_per_s = senders as f64 * rate;

    // Wait until the sending window ends.
    let end_ns = start_ns + (opts.duration * 1e9) as u64;
    tokio::time::sleep(Duration::from_nanos(end_ns.saturating_sub(shared.now_ns()))).await;
    shared.stop_sending.store(true, Ordering::SeqCst);
    shared.stop_notify.notify_waiters();
    // A send whose timer fired as sending stopped is counted before the drain looks: otherwise
    // the drain could find everything delivered, end, and leave that message's deliveries
    // missing (a target without acks counts a message acked when it is sent).
    while shared.counting_sends.load(Ordering::SeqCst) > 0 {
        tokio::task::yield_now().await;
    }
    let mut idle = None;
    if opts.scenario == Scenario::Idle {
        let established = shared.connected.load(Ordering::Relaxed);
        let after = opts.server_pid.and_then(rss_bytes);
        let per = match (rss_before, after) {
            (Some(b), Some(a)) if established > 0 => Some(a.saturating_sub(b) as f64 / established as f64),
            _ => None,
        };
        idle = Some(IdleReport {
            established,
            server_rss_before: rss_before,
            server_rss_after: after,
            bytes_per_connection: per,
        });
    }
    // Drain: wait for the answer to every send and the deliveries of everything acked, within
    // `--drain`. A send still unanswered when the drain ends is reported as sent, not acked.
    let drain_until = Instant::now() + Duration::from_secs_f64(opts.drain);
    while Instant::now() < drain_until
        && (shared.answered.load(Ordering::Relaxed) < shared.sent.load(Ordering::Relaxed)
            || shared.delivered.load(Ordering::Relaxed) < shared.expected.load(Ordering::Relaxed))
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shared.stop_everything();
    let mut tallies = Vec::with_capacity(n);
    for t in tasks {
        tallies.push(t.await?);
    }
    let _ = ticker.await;
    report.duration_s = opts.duration;
    report.idle = idle;
    let stored = if opts.verify && opts.target == Target::Rookery { Some(stored_history(shared).await?) } else { None };
    report::merge(&tallies, &shared.plan.members, &shared.plan.sender_rooms(), opts.verify, stored.as_ref(), report);
    Ok(())
}

/// Reads every conversation's whole history over HTTP (for `--verify`), 8 conversations at a
/// time, each as its first member.
async fn stored_history(shared: &Arc<Shared>) -> anyhow::Result<report::Stored> {
    let base = shared.opts.url[0].replace("ws://", "http://");
    let rooms: Vec<usize> = (0..shared.plan.rooms.len()).collect();
    let mut tasks = Vec::new();
    for chunk in rooms.chunks(rooms.len().div_ceil(8).max(1)) {
        let (shared, base, chunk) = (shared.clone(), base.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut http = connect_http(&base).await?;
            let mut out = Vec::new();
            for room in chunk {
                let Some(first) = shared.plan.members[room].first() else { continue };
                let token = shared.plan.conns[*first as usize].token.clone();
                out.push((room, read_room(&mut http, &shared.plan.rooms[room], token.as_deref()).await?));
            }
            Ok::<_, anyhow::Error>(out)
        }));
    }
    let mut stored =
        report::Stored { rooms: vec![MessageSet::default(); shared.plan.rooms.len()], ..Default::default() };
    for t in tasks {
        for (room, (messages, twice, out_of_order)) in t.await?? {
            stored.rooms[room] = messages;
            stored.twice += twice;
            stored.out_of_order += out_of_order;
        }
    }
    Ok(stored)
}

/// Connects to the HTTP listener, trying for a while (the node may be restarting).
async fn connect_http(base: &str) -> anyhow::Result<crate::http::HttpConn> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match crate::http::HttpConn::connect(base).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => return Err(e.context("reading the stored history")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One conversation's history: every stored (sender, message number), how many were stored
/// again, and how many times `seq` failed to increase from one message to the next.
async fn read_room(
    http: &mut crate::http::HttpConn,
    conv: &str,
    token: Option<&str>,
) -> anyhow::Result<(MessageSet, u64, u64)> {
    let mut stored = MessageSet::default();
    let (mut after, mut twice, mut out_of_order) = (0u64, 0u64, 0u64);
    loop {
        let path = format!("/api/conversations/{conv}/messages?after_seq={after}&limit=500");
        let (status, page) = http.request("GET", &path, token, None).await?;
        anyhow::ensure!(status == 200, "reading the history of {conv} answered {status}: {page}");
        let messages = page["messages"].as_array().context("messages in the history page")?;
        for m in messages {
            let seq = m["seq"].as_u64().context("seq")?;
            if seq <= after {
                out_of_order += 1;
            }
            after = after.max(seq);
            if let Some((sender, k, _)) = m["body"].as_str().and_then(crate::target::parse_body) {
                twice += u64::from(!stored.insert((sender, k)));
            }
        }
        if page["has_more"] != true || messages.is_empty() {
            return Ok((stored, twice, out_of_order));
        }
    }
}

/// Messages from the reader to the writer of a connection.
enum Control {
    Text(String),
    Pong(Vec<u8>),
}

/// One connection for the whole run: connects (again after a drop, with `sync` on Rookery),
/// sends on schedule and tallies what arrives.
async fn connection(shared: Arc<Shared>, i: usize, start_ns: u64) -> ConnTally {
    let opts = &shared.opts;
    let plan = &shared.plan.conns[i];
    let tally = Arc::new(Mutex::new(ConnTally::new(i as u32)));
    let ramp_at = Duration::from_secs_f64(opts.ramp * i as f64 / shared.plan.conns.len().max(1) as f64);
    tokio::time::sleep(ramp_at).await;
    let next_k = Arc::new(AtomicU64::new(0));
    let unanswered: Unanswered = Arc::default();
    // Highest seq seen per room, for `sync` after a reconnect.
    let positions: Arc<Mutex<HashMap<usize, u64>>> = Arc::default();
    let mut first = true;
    let mut wait = RECONNECT_FIRST_WAIT;
    // This connection's share of the wait, so that dropped connections spread their returns.
    let spread = (i as f64 * 0.618_033_988_7).fract();
    while !shared.stop_all.load(Ordering::Relaxed) {
        if !first {
            // Rookery connections come back until the run ends (the drain included), so that
            // members catch up through `sync` after a node restart.
            if opts.target != Target::Rookery {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait.mul_f64(1.0 + spread)) => {}
                _ = shared.stop_notify.notified() => {}
            }
            wait = (wait * 2).min(RECONNECT_MAX_WAIT);
            if shared.stop_all.load(Ordering::Relaxed) {
                break;
            }
        }
        let rooms: Vec<String> = plan.rooms.iter().map(|r| shared.plan.rooms[*r].clone()).collect();
        let addr = shared.addrs[i % shared.addrs.len()];
        let path = opts.target.path(&plan.user, &rooms);
        let conn = match ws::connect(addr, shared.source(i), &path, plan.token.as_deref()).await {
            Ok(c) => c,
            Err(e) => {
                *tally.lock().errors.entry(format!("connect: {e}")).or_default() += 1;
                shared.errors.fetch_add(1, Ordering::Relaxed);
                first = false;
                continue;
            }
        };
        if !first {
            tally.lock().reconnects += 1;
        }
        wait = RECONNECT_FIRST_WAIT;
        shared.connected.fetch_add(1, Ordering::Relaxed);
        let (ctrl_tx, ctrl_rx) = mpsc::channel::<Control>(64);
        if let Some(g) = opts.target.greeting(&plan.user, &rooms) {
            let _ = ctrl_tx.try_send(Control::Text(g));
        }
        // Every Rookery connection syncs once it is up, the first one too: a message sent to
        // this user before the session was registered (a start slowed down by load, past the
        // ramp's margin) is in the store but was never in the live stream, as for a client.
        let syncing = match sync_frame(&shared, i, &positions) {
            Some(f) => ctrl_tx.try_send(Control::Text(f)).is_ok(),
            None => false,
        };
        let ready = Arc::new(Notify::new());
        let ready_flag = Arc::new(AtomicBool::new(opts.target.ready_on_upgrade()));
        // Sent on the dropped connection and never answered: sent again, first.
        let resend: Vec<u64> = unanswered.lock().iter().copied().collect();
        let (reader, writer) = conn;
        let r = tokio::spawn(read_loop(
            shared.clone(),
            i,
            reader,
            ctrl_tx,
            Tallies { tally: tally.clone(), unanswered: unanswered.clone() },
            positions.clone(),
            syncing,
            ready.clone(),
            ready_flag.clone(),
            start_ns,
        ));
        let w = tokio::spawn(write_loop(
            shared.clone(),
            i,
            writer,
            ctrl_rx,
            Tallies { tally: tally.clone(), unanswered: unanswered.clone() },
            Sends { next_k: next_k.clone(), resend },
            ready,
            ready_flag,
            start_ns,
        ));
        let _ = r.await;
        w.abort();
        let _ = w.await;
        shared.connected.fetch_sub(1, Ordering::Relaxed);
        first = false;
    }
    Arc::try_unwrap(tally).map(|m| m.into_inner()).unwrap_or_else(|arc| {
        let mut t = arc.lock();
        std::mem::replace(&mut *t, ConnTally::new(i as u32))
    })
}

/// `sync` from the highest `seq` seen in each of the connection's rooms (0 where none was
/// seen: the user's stored delivery cursor counts what was queued to a session that may have
/// died before writing it out).
fn sync_frame(shared: &Shared, i: usize, positions: &Mutex<HashMap<usize, u64>>) -> Option<String> {
    let positions = positions.lock();
    let since: Vec<(String, u64)> = shared.plan.conns[i]
        .rooms
        .iter()
        .map(|r| (shared.plan.rooms[*r].clone(), positions.get(r).copied().unwrap_or(0)))
        .collect();
    shared.opts.target.sync_frame(&since)
}

/// What a connection's reader and writer record into.
struct Tallies {
    tally: Arc<Mutex<ConnTally>>,
    unanswered: Unanswered,
}

/// What a connection's writer sends: new messages from `next_k` on, after the `resend`s.
struct Sends {
    next_k: Arc<AtomicU64>,
    resend: Vec<u64>,
}

#[allow(clippy::too_many_arguments)]
async fn read_loop(
    shared: Arc<Shared>,
    i: usize,
    mut reader: ws::Reader,
    ctrl: mpsc::Sender<Control>,
    tallies: Tallies,
    positions: Arc<Mutex<HashMap<usize, u64>>>,
    mut syncing: bool,
    ready: Arc<Notify>,
    ready_flag: Arc<AtomicBool>,
    start_ns: u64,
) {
    let Tallies { tally, unanswered } = tallies;
    let target = shared.opts.target;
    let room_of = |name: &str| shared.room_index.get(name).copied();
    let my_room = shared.plan.conns[i].sends_to;
    let recipients = my_room.map_or(0, |r| shared.plan.members[r].len().saturating_sub(1)) as u64;
    // Last (seq or k) seen per room (and sender, without seq), for the order check.
    let mut last_seen: HashMap<(usize, u32), u64> = HashMap::new();
    // Registered once, before the flag is read: a stop set after the check still wakes it.
    // (Made afresh for every frame, with a 200 ms timer beside it, it cost 7-11 % of the load
    // generator's user time per delivery: docs/benchmarks.md, 2026-12-03 (morning).)
    let stopped = shared.stop_all_notify.notified();
    tokio::pin!(stopped);
    stopped.as_mut().enable();
    if shared.stop_all.load(Ordering::Relaxed) {
        return;
    }
    loop {
        let mut obligated = |f: Frame<'_>| {
            if f.opcode == OpCode::Pong {
                let _ = ctrl.try_send(Control::Pong(f.payload.to_vec()));
            }
            async { Ok::<(), std::convert::Infallible>(()) }
        };
        let frame = tokio::select! {
            biased;
            f = reader.read_frame(&mut obligated) => f,
            _ = &mut stopped => return,
        };
        let frame = match frame {
            Ok(f) => f,
            Err(_) => return,
        };
        match frame.opcode {
            OpCode::Text => {}
            OpCode::Close => return,
            _ => continue,
        }
        let Ok(text) = std::str::from_utf8(&frame.payload) else {
            continue;
        };
        let now = shared.now_ns();
        match target.parse(text, &room_of) {
            Incoming::Ready => {
                ready_flag.store(true, Ordering::Relaxed);
                ready.notify_waiters();
            }
            Incoming::Reply(r) => {
                let _ = ctrl.try_send(Control::Text(r));
            }
            Incoming::Ack { k, .. } => {
                // One ack per message, whichever of its sends it answers.
                if !unanswered.lock().remove(&k) {
                    continue;
                }
                shared.answered.fetch_add(1, Ordering::Relaxed);
                let intended = shared.intended_ns(i, k, start_ns);
                let mut t = tally.lock();
                let _ = t.ack_latency.record(now.saturating_sub(intended) / 1000);
                t.acked.insert(k);
                shared.acked.fetch_add(1, Ordering::Relaxed);
                shared.expected.fetch_add(recipients, Ordering::Relaxed);
            }
            Incoming::Msg { room, sender, k, intended_ns, seq } => {
                if let Some(s) = seq {
                    let mut p = positions.lock();
                    let e = p.entry(room).or_insert(0);
                    *e = (*e).max(s);
                }
                if sender as usize == i {
                    continue; // our own copy (Rookery delivers to the sender's sessions too)
                }
                let mut t = tally.lock();
                if !t.received.insert((sender, k)) {
                    // A message replayed by `sync` may also arrive live (its fan-out was still
                    // queued when `sync` read the store): a duplicate recognisable by id, as the
                    // protocol allows. Anything else arriving twice is a real duplicate.
                    if !syncing && !t.via_sync.contains(&(sender, k)) {
                        t.duplicates += 1;
                    }
                    continue;
                }
                if syncing {
                    t.via_sync.insert((sender, k));
                }

                shared.delivered.fetch_add(1, Ordering::Relaxed);
                let _ = t.e2e_latency.record(now.saturating_sub(intended_ns) / 1000);
                let (key, order) = match seq {
                    Some(s) => ((room, u32::MAX), s),
                    None => ((room, sender), k),
                };
                let last = last_seen.entry(key).or_insert(0);
                if order < *last && !syncing {
                    t.reordered += 1;
                }
                *last = (*last).max(order);
            }
            Incoming::Synced { more } => {
                // Paged: ask again from where this page ended.
                syncing = more;
                if more {
                    if let Some(f) = sync_frame(&shared, i, &positions) {
                        let _ = ctrl.try_send(Control::Text(f));
                    }
                }
            }
            Incoming::Error { code, k } => {
                if let Some(k) = k {
                    if unanswered.lock().remove(&k) {
                        shared.answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                *tally.lock().errors.entry(code).or_default() += 1;
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
            Incoming::Other => {}
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn write_loop(
    shared: Arc<Shared>,
    i: usize,
    mut writer: ws::Writer,
    mut ctrl: mpsc::Receiver<Control>,
    tallies: Tallies,
    sends: Sends,
    ready: Arc<Notify>,
    ready_flag: Arc<AtomicBool>,
    start_ns: u64,
) {
    let Tallies { tally, unanswered } = tallies;
    let Sends { next_k, resend } = sends;
    let mut resend = resend.into_iter().peekable();
    let opts = &shared.opts;
    let target = opts.target;
    let sends_to =
        if opts.scenario == Scenario::Idle || opts.rate <= 0.0 { None } else { shared.plan.conns[i].sends_to };
    let room_name = sends_to.map(|r| shared.plan.rooms[r].clone());
    let recipients = sends_to.map_or(0, |r| shared.plan.members[r].len().saturating_sub(1)) as u64;
    loop {
        let k = next_k.load(Ordering::Relaxed);
        let due = shared.intended_ns(i, k, start_ns);
        let ready_now = ready_flag.load(Ordering::Relaxed);
        let resending = room_name.is_some() && ready_now && resend.peek().is_some();
        let sending = room_name.is_some() && ready_now && !resending && !shared.stop_sending.load(Ordering::Relaxed);
        let wait =
            if sending { Duration::from_nanos(due.saturating_sub(shared.now_ns())) } else { Duration::from_secs(3600) };
        tokio::select! {
            c = ctrl.recv() => {
                let Some(c) = c else { return };
                let result = match &c {
                    Control::Text(t) => writer.write_frame(Frame::text(Payload::Borrowed(t.as_bytes()))).await,
                    Control::Pong(p) => writer.write_frame(Frame::pong(Payload::Borrowed(p))).await,
                };
                if result.is_err() { return; }
            }
            _ = ready.notified(), if !ready_flag.load(Ordering::Relaxed) => {}
            _ = shared.stop_notify.notified() => {}
            _ = std::future::ready(()), if resending => {
                let Some(k) = resend.next() else { continue };
                // Answered meanwhile (an ack that was already on its way), nothing to resend.
                if !unanswered.lock().contains(&k) {
                    continue;
                }
                // The same message: same client_id, same body (its intended time included).
                let body = crate::target::body(i as u32, k, shared.intended_ns(i, k, start_ns), opts.message_size);
                let frame = target.send_frame(room_name.as_deref().unwrap_or_default(), k, &body, opts.echo);
                tally.lock().resent += 1;
                if writer.write_frame(Frame::text(Payload::Borrowed(frame.as_bytes()))).await.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(wait), if sending => {
                shared.counting_sends.fetch_add(1, Ordering::SeqCst);
                if shared.stop_sending.load(Ordering::SeqCst) {
                    // Sending stopped while this timer fired: the message is not sent.
                    shared.counting_sends.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let body = crate::target::body(i as u32, k, due, opts.message_size);
                let frame = target.send_frame(room_name.as_deref().unwrap_or_default(), k, &body, opts.echo);
                // Recorded before the write: the answer may arrive before the write returns, and
                // a write that fails may still have reached the server, so the message is resent
                // (same client_id) on the next connection either way.
                if target.acks() {
                    unanswered.lock().insert(k);
                }
                next_k.store(k + 1, Ordering::Relaxed);
                shared.sent.fetch_add(1, Ordering::Relaxed);
                {
                    let mut t = tally.lock();
                    t.sent += 1;
                    if !target.acks() {
                        t.acked.insert(k);
                        shared.acked.fetch_add(1, Ordering::Relaxed);
                        shared.answered.fetch_add(1, Ordering::Relaxed);
                        shared.expected.fetch_add(recipients, Ordering::Relaxed);
                    }
                }
                shared.counting_sends.fetch_sub(1, Ordering::SeqCst);
                if writer.write_frame(Frame::text(Payload::Borrowed(frame.as_bytes()))).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Opens `--users` connections, `--concurrency` at a time, and times each until it is ready.
async fn connect_storm(shared: &Arc<Shared>) -> ConnectReport {
    let ticker = progress(shared, "connecting");
    let n = shared.plan.conns.len();
    let permits = Arc::new(tokio::sync::Semaphore::new(shared.opts.concurrency.max(1)));
    let hold = Arc::new(Notify::new());
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (shared, permits, hold) = (shared.clone(), permits.clone(), hold.clone());
        tasks.push(tokio::spawn(async move {
            let permit = permits.acquire_owned().await.expect("semaphore open");
            let t0 = Instant::now();
            let plan = &shared.plan.conns[i];
            let path = shared.opts.target.path(&plan.user, &[]);
            let addr = shared.addrs[i % shared.addrs.len()];
            let (mut reader, mut writer) =
                ws::connect(addr, shared.source(i), &path, plan.token.as_deref()).await.ok()?;
            if let Some(g) = shared.opts.target.greeting(&plan.user, &[]) {
                writer.write_frame(Frame::text(Payload::Borrowed(g.as_bytes()))).await.ok()?;
            }
            until_ready(&mut reader, shared.opts.target).await.ok()?;
            let took = t0.elapsed();
            shared.connected.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            hold.notified().await;
            drop((reader, writer));
            Some(took)
        }));
    }
    // Everyone connected (or failed): stop the clock, then let them go.
    while shared.connected.load(Ordering::Relaxed) + shared.errors.load(Ordering::Relaxed) < n as u64
        && tasks.iter().any(|t| !t.is_finished())
        && started.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    hold.notify_waiters();
    let mut h = report::histogram();
    let mut failed = 0;
    for t in tasks {
        match t.await.ok().flatten() {
            Some(d) => {
                let _ = h.record(d.as_micros() as u64);
            }
            None => failed += 1,
        }
    }
    shared.stop_everything();
    let _ = ticker.await;
    let established = h.len();
    ConnectReport {
        established,
        failed,
        per_s: established as f64 / elapsed.as_secs_f64(),
        latency: Latency::from_histogram(&h),
    }
}

/// Writes `--history-messages` into the first room, then `--users` readers page through it.
async fn history(shared: &Arc<Shared>) -> anyhow::Result<HistoryReport> {
    anyhow::ensure!(shared.opts.target == Target::Rookery, "the history scenario runs against Rookery only");
    let opts = &shared.opts;
    let plan = &shared.plan;
    let room = plan.rooms.first().context("no room")?.clone();
    // Fill over HTTP, 16 connections at once (the WebSocket send rate limit does not apply).
    let writer_token = plan.conns[plan.members[0][0] as usize].token.clone();
    let total = opts.history_messages as u64;
    let base = opts.url[0].replace("ws://", "http://");
    let mut fillers = Vec::new();
    for f in 0..16u64 {
        let (base, room, token, size) = (base.clone(), room.clone(), writer_token.clone(), opts.message_size);
        fillers.push(tokio::spawn(async move {
            let mut http = crate::http::HttpConn::connect(&base).await?;
            for k in (f..total).step_by(16) {
                let body = serde_json::json!({"client_id": k.to_string(), "body": crate::target::body(0, k, 0, size)});
                let path = format!("/api/conversations/{room}/messages");
                let (status, answer) = http.request("POST", &path, token.as_deref(), Some(&body)).await?;
                anyhow::ensure!(status == 201, "history fill answered {status}: {answer}");
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for f in fillers {
        f.await??;
    }
    let ticker = progress(shared, "reading");
    let deadline = Instant::now() + Duration::from_secs_f64(opts.duration);
    let mut tasks = Vec::new();
    let job = Arc::new(ReadJob { room, total, deadline });
    for w in 0..opts.users.max(1) {
        let (shared, job) = (shared.clone(), job.clone());
        tasks.push(tokio::spawn(async move {
            match shared.opts.history_via {
                HistoryVia::Http => http_reader(&shared, w, &job).await,
                HistoryVia::Ws => sync_reader(&shared, w, &job).await,
            }
        }));
    }
    let mut h = report::histogram();
    let mut messages = 0;
    for t in tasks {
        let (pages, read) = t.await??;
        h.add(pages).expect("same bounds");
        messages += read;
    }
    shared.stop_everything();
    let _ = ticker.await;
    Ok(HistoryReport {
        via: opts.history_via,
        pages: h.len(),
        pages_per_s: h.len() as f64 / opts.duration,
        messages,
        messages_per_s: messages as f64 / opts.duration,
        latency: Latency::from_histogram(&h),
    })
}

/// Waits until a fresh connection is ready for traffic (Rookery's `hello`, Socket.IO's
/// connect answer; at once for targets ready on upgrade), skipping other frames, for at most
/// 30 s per frame.
async fn until_ready(reader: &mut ws::Reader, target: Target) -> anyhow::Result<()> {
    if target.ready_on_upgrade() {
        return Ok(());
    }
    let no_room = |_: &str| None;
    loop {
        let mut ignore = |_: Frame<'_>| async { Ok::<(), std::convert::Infallible>(()) };
        let frame = tokio::time::timeout(Duration::from_secs(30), reader.read_frame(&mut ignore))
            .await
            .context("no greeting within 30 s")??;
        if target.parse(std::str::from_utf8(&frame.payload)?, &no_room) == Incoming::Ready {
            return Ok(());
        }
    }
}

/// What every `history` reader reads: `total` messages of `room`, until `deadline`.
struct ReadJob {
    room: String,
    total: u64,
    deadline: Instant,
}

/// A `history` reader's latencies (one per page or replay) and the messages it read.
type ReadResult = anyhow::Result<(hdrhistogram::Histogram<u64>, u64)>;

/// When a `history` reader reads next, and from where.
struct ReadSchedule {
    started: Instant,
    /// Time between reads (`--history-rate`); none: each read as soon as the last one ended.
    pace: Option<Duration>,
    first: u64,
    k: u64,
}

impl ReadSchedule {
    /// Reader `w`'s schedule; readers start at different positions.
    fn new(opts: &Opts, w: usize) -> Self {
        let pace = (opts.history_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / opts.history_rate));
        ReadSchedule { started: Instant::now(), pace, first: w as u64, k: w as u64 }
    }

    /// Waits until the next read is due (open loop: read n is due at n × pace, whatever the
    /// earlier reads took) and returns its position, spread over `0..total`.
    async fn next(&mut self, total: u64) -> u64 {
        if let Some(pace) = self.pace {
            tokio::time::sleep_until((self.started + pace * (self.k - self.first) as u32).into()).await;
        }
        let at = self.k.wrapping_mul(7919) % total.max(1);
        self.k += 1;
        at
    }
}

/// Messages a `history` page holds: the HTTP reader asks for this many, before a `seq` that
/// leaves at least this many below it.
const HTTP_PAGE: u64 = 50;

/// One `history` reader over HTTP: pages of [`HTTP_PAGE`] before spread positions, until
/// `deadline`. Returns the pages' latencies and the messages the pages held.
async fn http_reader(shared: &Arc<Shared>, w: usize, job: &ReadJob) -> ReadResult {
    let (room, total, deadline) = (&job.room, job.total, job.deadline);
    let plan = &shared.plan;
    let token = plan.conns[plan.members[0][w % plan.members[0].len()] as usize].token.clone();
    let mut http =
        crate::http::HttpConn::connect(&shared.opts.url[w % shared.opts.url.len()].replace("ws://", "http://")).await?;
    let mut h = report::histogram();
    let mut messages = 0;
    let mut schedule = ReadSchedule::new(&shared.opts, w);
    while Instant::now() < deadline {
        let before = HTTP_PAGE + 1 + schedule.next(total).await;
        let t0 = Instant::now();
        let path = format!("/api/conversations/{room}/messages?limit={HTTP_PAGE}&before_seq={before}");
        let (status, page) = http.request("GET", &path, token.as_deref(), None).await?;
        if status != 200 {
            anyhow::bail!("history read answered {status}");
        }
        let _ = h.record(t0.elapsed().as_micros() as u64);
        // The page is parsed already (`HttpConn::request`): its length is what was read.
        messages += page["messages"].as_array().map_or(0, |m| m.len() as u64);
        shared.delivered.fetch_add(1, Ordering::Relaxed);
    }
    Ok((h, messages))
}

/// One `history` reader over WebSocket (`--history-via ws`): a `sync` from a spread position,
/// then the replay read up to its `synced` (at most the node's `sync_batch` messages), until
/// `deadline`; the catch-up a reconnecting client makes. Returns each replay's latency (from
/// the `sync` to its `synced`) and the messages read.
async fn sync_reader(shared: &Arc<Shared>, w: usize, job: &ReadJob) -> ReadResult {
    let (room, total, deadline) = (&job.room, job.total, job.deadline);
    let conn = shared.plan.members[0][w % shared.plan.members[0].len()] as usize;
    let plan = &shared.plan.conns[conn];
    let target = shared.opts.target;
    let addr = shared.addrs[w % shared.addrs.len()];
    let (mut reader, mut writer) =
        ws::connect(addr, shared.source(w), &target.path(&plan.user, &[]), plan.token.as_deref())
            .await
            .context("history reader's WebSocket")?;
    until_ready(&mut reader, target).await?;
    let mut ignore = |_: Frame<'_>| async { Ok::<(), std::convert::Infallible>(()) };
    let mut h = report::histogram();
    let mut messages = 0;
    let mut schedule = ReadSchedule::new(&shared.opts, w);
    while Instant::now() < deadline {
        let after = schedule.next(total).await;
        let t0 = Instant::now();
        let sync = target.sync_frame(&[(room.to_string(), after)]).context("sync is Rookery's")?;
        writer.write_frame(Frame::text(Payload::Borrowed(sync.as_bytes()))).await?;
        loop {
            let frame = reader.read_frame(&mut ignore).await?;
            let text = &frame.payload[..];
            if text.starts_with(br#"{"op":"msg","#) {
                messages += 1;
            } else if text.starts_with(br#"{"op":"synced""#) {
                break;
            } else if text.starts_with(br#"{"op":"error""#) {
                anyhow::bail!("sync answered {}", String::from_utf8_lossy(text));
            }
        }
        let _ = h.record(t0.elapsed().as_micros() as u64);
        shared.delivered.fetch_add(1, Ordering::Relaxed);
    }
    Ok((h, messages))
}
