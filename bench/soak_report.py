#!/usr/bin/env python3
"""Markdown tables from a soak's JSON (`bench/soak.py --out FILE`), for docs/benchmarks.md.

    python3 bench/soak_report.py target/soak.json [--every 300]

Prints one row per `--every` seconds (memory and fds at the row's last sample, acked/s averaged
over the rows' window, the worst interval ack p99 in it), then the run's figures.
"""
import argparse
import json


def mib(b):
    return f"{b / 2**20:,.0f} MiB"


def windows(samples, every):
    rows, current, edge = [], [], every
    for s in samples:
        current.append(s)
        if s["t"] >= edge:
            rows.append(current)
            current, edge = [], edge + every
    if current:
        rows.append(current)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json")
    ap.add_argument("--every", type=float, default=300)
    args = ap.parse_args()
    with open(args.json) as f:
        run = json.load(f)
    samples, reports = run["samples"], run["reports"]
    print("| time (min:s) | node RSS | open fds | acked/s (window mean) | worst interval ack p99 |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for w in windows(samples, args.every):
        last = w[-1]
        mean = sum(s["acked_per_s"] for s in w) / len(w)
        worst = max(s["ack_p99_ms"] for s in w)
        print(f"| {int(last['t']) // 60}:{int(last['t']) % 60:02d} | {mib(last['rss'])} | {last['fds']} | {mean:,.0f} | {worst:,.0f} ms |")
    print()
    print("| figure | value |")
    print("| --- | ---: |")
    for name in ("group", "direct"):
        r = reports[name]
        v = r.get("verify") or {}
        print(f"| {name}: acked / sent, delivered | {r['acked']:,} / {r['sent']:,}, {r['delivered']:,} |")
        print(f"| {name}: end-to-end p50 / p99 / max | {r['e2e']['p50_ms']:.1f} / {r['e2e']['p99_ms']:.1f} / "
              f"{r['e2e']['max_ms']:.0f} ms |")
        print(f"| {name}: `--verify` missing, duplicated, reordered, lost, stored twice | "
              + ", ".join(str(v.get(k)) for k in ("missing", "duplicated", "reordered", "lost", "stored_twice")) + " |")
    h = reports["history"].get("history") or {}
    if h:
        print(f"| history pages read (p99) | {h['pages']:,} ({h['latency']['p99_ms']:.1f} ms) |")
    after = [s for s in samples if s["t"] >= run.get("warmup_s", 15)] or samples
    load = [s for s in after if s["t"] <= run["duration_s"]]  # not the drain at the end
    print(f"| node RSS: after warm-up, highest, end | {mib(after[0]['rss'])}, {mib(max(s['rss'] for s in samples))}, "
          f"{mib(samples[-1]['rss'])} |")
    print(f"| open fds under load: lowest, highest; after | {min(s['fds'] for s in load)}, "
          f"{max(s['fds'] for s in load)}; {samples[-1]['fds']} |")
    p99s = sorted(s["ack_p99_ms"] for s in load)
    print(f"| interval ack p99: median, 99th percentile of intervals, worst | {p99s[len(p99s) // 2]:,.0f} ms, "
          f"{p99s[int(len(p99s) * 0.99)]:,.0f} ms, {p99s[-1]:,.0f} ms |")
    print(f"| `--check` | {'ok' if not run['failures'] else '; '.join(run['failures'])} |")


if __name__ == "__main__":
    main()
