#!/usr/bin/env python3
"""Turns the raw measurements of benchmarks/compare.sh into tables and charts.

    report.py --outdir DIR [--doc docs/performance.md]

Reads DIR/raw.csv (one row per run), DIR/callgrind.csv (instruction counts) and DIR/meta.txt
(key=value lines about the run and the machine); writes DIR/results.csv (medians and ratios
to glibc), DIR/results.md (the Markdown report), DIR/*.dat, DIR/*.gp and DIR/*.png (gnuplot),
and with --doc replaces the generated section of that file. Standard library only.
"""
import argparse
import csv
import math
import os
import statistics
import subprocess
import sys

BEGIN = "<!-- BEGIN GENERATED RESULTS: benchmarks/compare.sh writes this section; do not edit it by hand -->"
END = "<!-- END GENERATED RESULTS -->"
BASELINE = "glibc"


def read_meta(path):
    meta = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                key, value = line.rstrip("\n").split("=", 1)
                meta[key] = value
    return meta


def ordered(values, preferred):
    """values in the order of preferred, then any others in first-seen order."""
    out = [v for v in preferred if v in values]
    return out + [v for v in values if v not in out]


def median(xs):
    return statistics.median(xs) if xs else None


def ratio(x, base):
    if x is None or base is None or base <= 0:
        return None
    return x / base


def fmt(x, digits=3):
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits}g}" if x < 1 else f"{x:.2f}"


def fmt_ratio(r):
    return "–" if r is None else f"{r:.2f}×"


def geomean(xs):
    xs = [x for x in xs if x is not None and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def load_runs(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def summarize(runs, workloads, allocators):
    """{(workload, allocator): summary dict}."""
    table = {}
    for w in workloads:
        for a in allocators:
            rows = [r for r in runs if r["workload"] == w and r["allocator"] == a]
            ok = [r for r in rows if r["status"] == "ok"]
            times = [float(r["time_s"]) for r in ok]
            table[(w, a)] = {
                "runs": len(rows),
                "failures": len(rows) - len(ok),
                "time": median(times),
                "time_min": min(times) if times else None,
                "time_max": max(times) if times else None,
                "ops": median([float(r["ops_per_s"]) for r in ok]),
                "peak": median([float(r["peak_rss_kb"]) for r in ok]),
                "final": median([float(r["final_rss_kb"]) for r in ok]),
                "checksums": sorted({r["checksum"] for r in ok}),
            }
    for w in workloads:
        base = table.get((w, BASELINE))
        for a in allocators:
            s = table[(w, a)]
            s["time_ratio"] = ratio(s["time"], base and base["time"])
            s["peak_ratio"] = ratio(s["peak"], base and base["peak"])
            s["final_ratio"] = ratio(s["final"], base and base["final"])
    return table


def checksum_problems(table, workloads, allocators):
    """Workloads whose allocators disagree on the result: a sign of a broken allocator."""
    problems = []
    for w in workloads:
        base = table.get((w, BASELINE), {}).get("checksums", [])
        for a in allocators:
            sums = table[(w, a)]["checksums"]
            if len(sums) > 1 or (base and sums and sums != base):
                problems.append(f"`{w}` under `{a}`: checksum {', '.join(sums)} "
                                f"(glibc: {', '.join(base) or 'none'})")
    return problems


def write_results_csv(path, table, workloads, allocators):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["workload", "allocator", "runs", "failures", "time_s_median", "time_s_min",
                    "time_s_max", "time_ratio_vs_glibc", "ops_per_s_median", "peak_rss_kb_median",
                    "peak_rss_ratio_vs_glibc", "final_rss_kb_median", "final_rss_ratio_vs_glibc"])
        for wl in workloads:
            for a in allocators:
                s = table[(wl, a)]
                num = lambda x, d=4: "" if x is None else f"{x:.{d}f}"
                w.writerow([wl, a, s["runs"], s["failures"], num(s["time"]), num(s["time_min"]),
                            num(s["time_max"]), num(s["time_ratio"]), num(s["ops"], 0),
                            num(s["peak"], 0), num(s["peak_ratio"]), num(s["final"], 0),
                            num(s["final_ratio"])])


def write_chart(outdir, name, title, ylabel, table, workloads, allocators, key):
    dat = os.path.join(outdir, f"{name}.dat")
    with open(dat, "w") as f:
        f.write("workload " + " ".join(allocators) + "\n")
        for wl in workloads:
            vals = [table[(wl, a)][key] for a in allocators]
            f.write(wl + " " + " ".join("NaN" if v is None else f"{v:.4f}" for v in vals) + "\n")
    gp = os.path.join(outdir, f"{name}.gp")
    ncol = len(allocators) + 1
    values = [table[(wl, a)][key] for wl in workloads for a in allocators]
    values = [v for v in values if v]
    # Bars grow from the bottom of a log axis: start it a power of two below the smallest.
    bottom = 2.0 ** math.floor(math.log2(min(values + [1.0]) * 0.9)) if values else 0.5
    bottom = min(bottom, 0.5)
    with open(gp, "w") as f:
        f.write(f"""# Generated by benchmarks/report.py: gnuplot {name}.gp (in this directory)
set terminal pngcairo size 1280,560 font ",10"
set output "{name}.png"
set title "{title}"
set ylabel "{ylabel}"
set logscale y 2
set yrange [{bottom}:*]
set grid ytics
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key outside right top vertical
set xtics nomirror rotate by -20
set arrow from graph 0, first 1 to graph 1, first 1 nohead lw 1.5 dt 2 lc rgb "black"
plot for [i=2:{ncol}] "{name}.dat" using i:xtic(1) title columnheader(i)
""")
    try:
        subprocess.run(["gnuplot", f"{name}.gp"], cwd=outdir, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return f"{name}.png"
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"report.py: gnuplot failed for {name}: {e}", file=sys.stderr)
        return None


def load_callgrind(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_micro(outdir, presets):
    """{size: {column: ns}} from micro-<preset>.json (Google Benchmark JSON, median aggregates):
    column sm-<preset> for StarMalloc, and 'C library' from the first file's <libc> runs."""
    import json
    rows = {}
    for i, preset in enumerate(presets):
        path = os.path.join(outdir, f"micro-{preset}.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            data = json.load(f)
        for b in data.get("benchmarks", []):
            if b.get("aggregate_name") != "median":
                continue
            name = b.get("run_name", "")
            if not name.startswith("BM_malloc_free<"):
                continue
            kind, size = name[len("BM_malloc_free<"):].split(">/", 1)
            factor = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}.get(b.get("time_unit", "ns"), 1)
            ns = float(b["real_time"]) * factor
            if kind == "sm":
                rows.setdefault(int(size), {})[f"sm-{preset}"] = ns
            elif kind == "libc" and i == 0:
                rows.setdefault(int(size), {})["glibc"] = ns
    return rows


def markdown(meta, table, workloads, allocators, callgrind, charts, problems, failures, relpath,
             micro):
    out = []
    p = out.append
    p("## Results of the last run")
    p("")
    p(f"Generated by `benchmarks/compare.sh {meta.get('args', '')}`".rstrip() + f" on {meta.get('date', '?')}, "
      f"StarMalloc commit `{meta.get('commit', '?')}`. Raw and summarised data: "
      f"[`{relpath}/raw.csv`]({relpath}/raw.csv), [`{relpath}/results.csv`]({relpath}/results.csv).")
    p("")
    p("| | |")
    p("|---|---|")
    p(f"| machine | {meta.get('cpu', '?')}, {meta.get('nproc', '?')} cores, {meta.get('memory', '?')} RAM |")
    p(f"| system | Linux {meta.get('kernel', '?')}, {meta.get('os', '?')}, {meta.get('compiler', '?')} |")
    p(f"| run | {meta.get('mode', '?')}: scale {meta.get('scale', '?')}, {meta.get('reps', '?')} repetitions "
      f"(allocators interleaved round-robin in each), median of each |")
    p(f"| allocators | {meta.get('versions', '?')} |")
    if meta.get("note"):
        p(f"| caveat | {meta['note']} |")
    load = meta.get("load_before", "")
    if load:
        p(f"| load average | {load} before the run, {meta.get('load_after', '?')} after |")
    spreads = sorted((s["time_max"] - s["time_min"]) / s["time"] for s in table.values()
                     if s["time"] and s["runs"] - s["failures"] > 1)
    if spreads:
        p(f"| noise | (max − min) / median of the times of one cell: {statistics.median(spreads):.0%} "
          f"in the middle cell, {spreads[-1]:.0%} at worst: ratios that differ by less than that "
          f"may differ by noise alone |")
    p("")

    def grid(title, key, rkey, unit, scale=1.0):
        p(f"### {title}")
        p("")
        p("| workload | " + " | ".join(allocators) + " |")
        p("|---|" + "---:|" * len(allocators))
        for wl in workloads:
            cells = []
            for a in allocators:
                s = table[(wl, a)]
                v = s[key]
                if v is None:
                    cells.append("FAIL" if s["failures"] else "–")
                    continue
                cell = fmt(v * scale) + unit
                if a != BASELINE:
                    cell += f" ({fmt_ratio(s[rkey])})"
                if s["failures"]:
                    cell += f" [{s['failures']} failed]"
                cells.append(cell)
            p(f"| {wl} | " + " | ".join(cells) + " |")
        gm = [geomean([table[(wl, a)][rkey] for wl in workloads]) for a in allocators]
        p("| *geometric mean of ratios* | " + " | ".join(fmt_ratio(g) for g in gm) + " |")
        p("")

    grid("Time (median seconds; ratio to glibc; lower is better)", "time", "time_ratio", " s")
    if charts.get("time"):
        p(f"![time relative to glibc]({relpath}/{charts['time']})")
        p("")
    grid("Peak RSS (median MiB; ratio to glibc; lower is better)", "peak", "peak_ratio", "", 1 / 1024)
    if charts.get("rss"):
        p(f"![peak RSS relative to glibc]({relpath}/{charts['rss']})")
        p("")
    grid("Final RSS (median MiB at the end of the workload, after it freed its memory)", "final",
         "final_ratio", "", 1 / 1024)

    if callgrind:
        sizes = ordered(list(dict.fromkeys(r["size"] for r in callgrind)), [])
        p("### Instructions per malloc + free pair (callgrind, single thread)")
        p("")
        p("`starmalloc-pairs N size` under `valgrind --tool=callgrind`: (instructions with N pairs − "
          f"instructions with 0 pairs) / N, N = {callgrind[0]['pairs']}. Exact and repeatable, "
          "unlike times; says nothing about cache misses, page faults or contention.")
        p("")
        p("| allocator | " + " | ".join(f"{s} B" for s in sizes) + " |")
        p("|---|" + "---:|" * len(sizes))
        for a in allocators:
            row = []
            for s in sizes:
                r = [x for x in callgrind if x["allocator"] == a and x["size"] == s]
                v = r[0]["ir_per_pair"] if r else ""
                row.append(v if v not in ("", "NaN") else "–")
            if any(v != "–" for v in row):
                p(f"| {a} | " + " | ".join(row) + " |")
        p("")

    if micro:
        cols = ["glibc"] + [c for c in (f"sm-{x}" for x in meta.get("presets", "").split())
                                if any(c in r for r in micro.values())]
        p("### malloc + free pairs by size (starmalloc-micro, ns per pair)")
        p("")
        p("`BM_malloc_free<sm>/<size>` (the prefixed API of each preset's build) next to "
          "`BM_malloc_free<libc>` (glibc), median of 3 repetitions; single thread, the same block "
          "allocated and freed again, so this is the best case of each allocator's fast path.")
        p("")
        p("| size | " + " | ".join(cols) + " |")
        p("|---:|" + "---:|" * len(cols))
        for size in sorted(micro):
            r = micro[size]
            base = r.get("glibc")
            cells = []
            for c in cols:
                v = r.get(c)
                cell = "–" if v is None else f"{v:.1f}"
                if v is not None and c != "glibc" and base:
                    cell += f" ({fmt_ratio(v / base)})"
                cells.append(cell)
            label = f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"
            if size >= 1 << 20:
                label = f"{size >> 20} MiB"
            p(f"| {label} | " + " | ".join(cells) + " |")
        p("")

    p("### Failures and wrong results")
    p("")
    if not failures and not problems:
        p("None: every run exited 0 and every allocator computed the same checksums as glibc.")
    for f in failures:
        p(f"- {f}")
    for pr in problems:
        p(f"- wrong result: {pr}")
    p("")
    return "\n".join(out)


def replace_section(doc_path, body):
    text = open(doc_path).read() if os.path.exists(doc_path) else ""
    section = f"{BEGIN}\n{body}\n{END}"
    if BEGIN in text and END in text:
        before = text.split(BEGIN, 1)[0]
        after = text.split(END, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(doc_path, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outdir", required=True)
    ap.add_argument("--doc")
    args = ap.parse_args()
    outdir = args.outdir
    meta = read_meta(os.path.join(outdir, "meta.txt"))
    runs = load_runs(os.path.join(outdir, "raw.csv"))
    workloads = ordered(list(dict.fromkeys(r["workload"] for r in runs)),
                        meta.get("workloads", "").split())
    allocators = ordered(list(dict.fromkeys(r["allocator"] for r in runs)),
                         meta.get("allocators", "").split())
    table = summarize(runs, workloads, allocators)
    write_results_csv(os.path.join(outdir, "results.csv"), table, workloads, allocators)
    problems = checksum_problems(table, workloads, allocators)
    failures = [f"`{r['workload']}` under `{r['allocator']}` (repetition {r['rep']}): {r['status']}"
                for r in runs if r["status"] != "ok"]
    shown = [a for a in allocators if a != BASELINE] if BASELINE in allocators else allocators
    charts = {
        "time": write_chart(outdir, "time_ratio", "Time relative to glibc (median; lower is better)",
                            "time / glibc time (log scale)", table, workloads, shown, "time_ratio"),
        "rss": write_chart(outdir, "peak_rss_ratio",
                           "Peak RSS relative to glibc (median; lower is better)",
                           "peak RSS / glibc peak RSS (log scale)", table, workloads, shown,
                           "peak_ratio"),
    }
    callgrind = load_callgrind(os.path.join(outdir, "callgrind.csv"))
    doc_dir = os.path.dirname(os.path.abspath(args.doc)) if args.doc else outdir
    relpath = os.path.relpath(os.path.abspath(outdir), doc_dir)
    micro = load_micro(outdir, meta.get("presets", "").split())
    body = markdown(meta, table, workloads, allocators, callgrind, charts, problems, failures,
                    relpath, micro)
    md_body = markdown(meta, table, workloads, allocators, callgrind, charts, problems, failures,
                       ".", micro)
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write("# StarMalloc benchmark comparison\n\n" + md_body + "\n")
    if args.doc:
        replace_section(args.doc, body)
    if problems:
        print("report.py: WRONG RESULTS:\n  " + "\n  ".join(problems), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
