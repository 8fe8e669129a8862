#!/usr/bin/env python3
"""Turns the raw measurements of benchmarks/compare.sh into tables and charts.

    report.py --outdir DIR [--doc docs/performance.md]

Reads DIR/raw.csv (one row per run), DIR/scaling-raw.csv (wl-larson --per-thread runs with 1
and 2 threads, when measured), DIR/callgrind.csv (instruction counts) and DIR/meta.txt
(key=value lines about the run and the machine); writes DIR/results.csv (medians and ratios
to glibc), DIR/scaling.csv (median throughputs and the 2-thread / 1-thread ratio), DIR/results.md
(the Markdown report), DIR/*.dat, DIR/*.gp and DIR/*.png (gnuplot), and with --doc replaces
the generated section of that file. Standard library only.
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


def summarize_scaling(runs, allocators):
    """{allocator: summary dict} of the wl-larson --per-thread runs (scaling-raw.csv)."""
    table = {}
    for a in ordered(list(dict.fromkeys(r["allocator"] for r in runs)), allocators):
        rows = [r for r in runs if r["allocator"] == a]
        s = {"runs": len(rows), "failures": sum(r["status"] != "ok" for r in rows)}
        by_rep = {}
        for t in ("1", "2"):
            ok = [r for r in rows if r["threads"] == t and r["status"] == "ok"]
            s[f"ops{t}"] = median([float(r["ops_per_s"]) for r in ok])
            s[f"checksums{t}"] = sorted({r["checksum"] for r in ok})
            for r in ok:
                by_rep.setdefault(r["rep"], {})[t] = float(r["ops_per_s"])
        s["ratio"] = ratio(s["ops2"], s["ops1"])
        # The two runs of one repetition ran back to back: their ratio shows the noise.
        paired = [v["2"] / v["1"] for v in by_rep.values() if "1" in v and "2" in v and v["1"] > 0]
        s["ratio_min"] = min(paired) if paired else None
        s["ratio_paired"] = median(paired) if paired else None
        s["ratio_max"] = max(paired) if paired else None
        # CPUs that other processes used during the runs: two threads on two cores need both.
        other = [(float(r["other_cpus"]), float(r["time_s"])) for r in rows
                 if r["status"] == "ok" and r.get("other_cpus")]
        weight = sum(t for _, t in other)
        s["other_mean"] = sum(o * t for o, t in other) / weight if weight > 0 else None
        s["other_max"] = max(o for o, _ in other) if other else None
        table[a] = s
    return table


def scaling_problems(scaling):
    """Allocators whose --per-thread checksums differ from glibc's with the same threads."""
    problems = []
    base = scaling.get(BASELINE, {})
    for a, s in scaling.items():
        for t in ("1", "2"):
            sums, ref = s[f"checksums{t}"], base.get(f"checksums{t}", [])
            if len(sums) > 1 or (ref and sums and sums != ref):
                problems.append(f"scaling run `larson --per-thread --threads {t}` under `{a}`: "
                                f"checksum {', '.join(sums)} (glibc: {', '.join(ref) or 'none'})")
    return problems


def write_scaling_csv(path, scaling):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["allocator", "runs", "failures", "ops_per_s_1_thread_median",
                    "ops_per_s_2_threads_median", "ratio_2_to_1", "ratio_2_to_1_median_of_reps",
                    "ratio_2_to_1_min_of_reps", "ratio_2_to_1_max_of_reps",
                    "other_processes_cpus_mean",
                    "other_processes_cpus_max"])
        num = lambda x, d=4: "" if x is None else f"{x:.{d}f}"
        for a, s in scaling.items():
            w.writerow([a, s["runs"], s["failures"], num(s["ops1"], 0), num(s["ops2"], 0),
                        num(s["ratio"]), num(s["ratio_paired"]), num(s["ratio_min"]),
                        num(s["ratio_max"]),
                        num(s["other_mean"], 2), num(s["other_max"], 2)])


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
             micro, scaling):
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

    if scaling:
        p("### Two-thread scaling (server pattern)")
        p("")
        p(f"`wl-larson --per-thread --scale {meta.get('scale', '?')}` with `--threads 1` and "
          "`--threads 2`: every thread does the same work whatever the number of threads; at "
          "each epoch the threads swap their segments of live blocks, so every epoch starts "
          "with frees of blocks that the other thread allocated. Median throughput (millions "
          "of replacements per second) of the repetitions; the ratio is throughput with 2 "
          "threads / with 1 (2.00× = perfect scaling on 2 cores, 1.00× = none); in brackets the "
          "lowest and highest ratio of the two runs of one repetition, which ran back to back. "
          "*Per repetition*: the median of those paired ratios, which a slow spell of the machine "
          "that hits both runs of a repetition does not move (the ratio of the medians compares "
          "runs from different repetitions). "
          "*Other load*: how many CPUs other processes used on average during the allocator's "
          "runs (from /proc/stat in 10 ms ticks, so a few hundredths are noise); with 2 cores, "
          "more than about 0.1 lowers the ratio.")
        p("")
        p("| allocator | 1 thread | 2 threads | 2 threads / 1 | per repetition | other load |")
        p("|---|---:|---:|---:|---:|---:|")
        for a, s in scaling.items():
            cells = [fmt(s["ops1"] and s["ops1"] / 1e6), fmt(s["ops2"] and s["ops2"] / 1e6)]
            r = fmt_ratio(s["ratio"])
            if s["ratio_min"] is not None and s["ratio_max"] != s["ratio_min"]:
                r += f" ({s['ratio_min']:.2f}–{s['ratio_max']:.2f})"
            if s["failures"]:
                r += f" [{s['failures']} failed]"
            other = "–" if s["other_mean"] is None else f"{s['other_mean']:.2f}"
            p(f"| {a} | " + " | ".join(cells) + f" | {r} | {fmt_ratio(s['ratio_paired'])} | {other} |")
        p("")

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
        failed = []
        for a in allocators:
            row = []
            for s in sizes:
                r = [x for x in callgrind if x["allocator"] == a and x["size"] == s]
                v = r[0]["ir_per_pair"] if r else ""
                row.append(v if v not in ("", "NaN") else "–")
            if not any(x["allocator"] == a for x in callgrind):
                continue
            p(f"| {a} | " + " | ".join(row) + " |")
            if "–" in row:
                failed.append(a)
        p("")
        if failed:
            why = " (scudo cannot map its regions there)" if "scudo" in failed else ""
            p(f"–: the run failed under valgrind: {', '.join(failed)}{why}.")
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
    scaling_path = os.path.join(outdir, "scaling-raw.csv")
    scaling_runs = load_runs(scaling_path) if os.path.exists(scaling_path) else []
    scaling = summarize_scaling(scaling_runs, allocators)
    if scaling:
        write_scaling_csv(os.path.join(outdir, "scaling.csv"), scaling)
    problems += scaling_problems(scaling)
    failures += [f"`larson --per-thread --threads {r['threads']}` under `{r['allocator']}` "
                 f"(scaling, repetition {r['rep']}): {r['status']}"
                 for r in scaling_runs if r["status"] != "ok"]
    doc_dir = os.path.dirname(os.path.abspath(args.doc)) if args.doc else outdir
    relpath = os.path.relpath(os.path.abspath(outdir), doc_dir)
    micro = load_micro(outdir, meta.get("presets", "").split())
    body = markdown(meta, table, workloads, allocators, callgrind, charts, problems, failures,
                    relpath, micro, scaling)
    md_body = markdown(meta, table, workloads, allocators, callgrind, charts, problems, failures,
                       ".", micro, scaling)
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write("# StarMalloc benchmark comparison\n\n" + md_body + "\n")
    if args.doc:
        replace_section(args.doc, body)
    if problems:
        print("report.py: WRONG RESULTS:\n  " + "\n  ".join(problems), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
