#!/usr/bin/env python3
"""Draws the plots of docs/performance.md as SVG from the benches' CSV output.

    TRIPLINE_BENCH_CSV=bench/out cargo bench --bench webhook_throughput --bench kube_throughput
    python3 bench/plot.py bench/out docs/

Standard library only (no network, no plotting package): writes
perf-throughput.svg (requests/s against connections: the axum + HMAC peer,
tripline no-match, tripline match -> outbox) and perf-latency-cdf.svg (the
event -> created -> reply latency CDF at 1 000 events/s against the API double).
"""
import csv
import math
import sys
from pathlib import Path

W, H = 720, 420
LEFT, RIGHT, TOP, BOTTOM = 80, 200, 40, 60
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]


def svg(title, xlabel, ylabel, series, xticks, yticks, xfmt, yfmt, xmap, ymap):
    """series: [(name, [(x, y), ...])]; xmap/ymap: value -> pixel."""
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{LEFT - 60}" y="22" font-size="15">{title}</text>',
    ]
    x0, x1, y0, y1 = LEFT, W - RIGHT, H - BOTTOM, TOP
    out.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/>')
    out.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>')
    for t in xticks:
        px = xmap(t)
        out.append(f'<line x1="{px}" y1="{y0}" x2="{px}" y2="{y0 + 5}" stroke="black"/>')
        out.append(f'<text x="{px}" y="{y0 + 20}" text-anchor="middle">{xfmt(t)}</text>')
    for t in yticks:
        py = ymap(t)
        out.append(f'<line x1="{x0 - 5}" y1="{py}" x2="{x1}" y2="{py}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 8}" y="{py + 4}" text-anchor="end">{yfmt(t)}</text>')
    out.append(f'<text x="{(x0 + x1) / 2}" y="{H - 15}" text-anchor="middle">{xlabel}</text>')
    out.append(
        f'<text x="18" y="{(y0 + y1) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 18 {(y0 + y1) / 2})">{ylabel}</text>'
    )
    for i, (name, points) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{xmap(x):.1f},{ymap(y):.1f}" for x, y in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        if len(points) < 20:
            for x, y in points:
                out.append(f'<circle cx="{xmap(x):.1f}" cy="{ymap(y):.1f}" r="3" fill="{colour}"/>')
        ly = TOP + 20 + 22 * i
        out.append(f'<line x1="{W - RIGHT + 15}" y1="{ly}" x2="{W - RIGHT + 40}" y2="{ly}" stroke="{colour}" stroke-width="3"/>')
        out.append(f'<text x="{W - RIGHT + 46}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def nice_ticks(top, n=5):
    step = 10 ** math.floor(math.log10(max(top, 1) / n))
    for m in (1, 2, 5, 10):
        if top / (step * m) <= n:
            step *= m
            break
    return [step * i for i in range(int(top / step) + 2)]


def throughput(src: Path, dst: Path):
    rows = list(csv.DictReader(open(src / "webhook_throughput.csv")))
    conns = [int(r["connections"]) for r in rows]
    cols = [("axum + HMAC peer", "peer"), ("tripline no match", "mismatch"),
            ("tripline match → outbox", "match_outbox")]
    if rows and float(rows[0].get("adnanh_match") or 0) > 0:
        cols.append(("adnanh/webhook match (fork)", "adnanh_match"))
    series = [(name, [(int(r["connections"]), float(r[c])) for r in rows]) for name, c in cols]
    top = max(y for _, pts in series for _, y in pts)
    yticks = nice_ticks(top)
    ymax = yticks[-1]
    lo, hi = math.log2(min(conns)), math.log2(max(conns))
    xmap = lambda x: LEFT + (math.log2(x) - lo) / (hi - lo) * (W - RIGHT - LEFT)
    ymap = lambda y: (H - BOTTOM) - y / ymax * (H - BOTTOM - TOP)
    (dst / "perf-throughput.svg").write_text(svg(
        "Signed GitHub push: requests/s against connections",
        "connections (log scale)", "requests/s", series, conns, yticks,
        str, lambda v: f"{v / 1000:.0f}k" if v >= 1000 else str(int(v)), xmap, ymap))


def latency(src: Path, dst: Path):
    us = sorted(int(r["latency_us"]) for r in csv.DictReader(open(src / "kube_latency_us.csv")))
    n = len(us)
    points = [(us[i] / 1000, (i + 1) / n) for i in range(0, n, max(1, n // 400))] + [(us[-1] / 1000, 1.0)]
    xmax_ms = max(1.0, us[min(n - 1, int(n * 0.999))] / 1000 * 1.1)
    xticks = nice_ticks(xmax_ms)
    xmax = xticks[-1]
    xmap = lambda x: LEFT + min(x, xmax) / xmax * (W - RIGHT - LEFT)
    ymap = lambda y: (H - BOTTOM) - y * (H - BOTTOM - TOP)
    p50, p99 = us[n // 2] / 1000, us[min(n - 1, int(n * 0.99))] / 1000
    (dst / "perf-latency-cdf.svg").write_text(svg(
        f"Event → object created → reply at 1 000 events/s (p50 {p50:.2f} ms, p99 {p99:.2f} ms)",
        "milliseconds", "fraction of events", [("tripline → API double", points)],
        xticks, [0, 0.25, 0.5, 0.75, 1.0], lambda v: f"{v:g}", lambda v: f"{v:g}", xmap, ymap))


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    dst.mkdir(parents=True, exist_ok=True)
    throughput(src, dst)
    latency(src, dst)
    print(f"wrote {dst / 'perf-throughput.svg'} and {dst / 'perf-latency-cdf.svg'}")


if __name__ == "__main__":
    main()
