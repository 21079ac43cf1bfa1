#!/usr/bin/env python3
"""Runs the benchmark suites, alternating each with the floors, and reports
medians and ratios to the floors measured in the same run.

A suite is a JSON file in benches/cases/ (see benches/README.md): a command
that prints one JSON object with its metrics, plus target rules. The floors
(suites marked "floor": true: "floor", the raw libzmq echo, and
"floor_unix", a plain Unix socket pair) run right before every other suite
in every round, so each ratio compares figures measured seconds apart on the
same (possibly busy) machine. A target marked "aim" is shown in the table
but is never a miss.

    python3 benches/run.py [--rounds 5] [--scale 1.0] [--only capi,python]
                           [--out bench/results.json] [--markdown] [--list]

Exit status: 0 when every suite ran and every call was correct (whether or
not targets were met; --fail-on-miss makes a missed target fail too), 1 when
a suite failed (a wrong result, a crash, a timeout), 2 for bad usage.
Standard library only.
"""

import argparse
import datetime
import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FLOOR = "floor"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def die(msg, code=1):
    log("run.py: " + msg)
    sys.exit(code)


# ---- suites -----------------------------------------------------------------

class Suite:
    def __init__(self, path, spec, places):
        self.path = path
        self.name = spec["suite"]
        self.description = spec.get("description", "")
        self.command = [self._fill(a, places) for a in spec["command"]]
        self.requires = [self._fill(r, places) for r in spec.get("requires", [])]
        self.build_hint = spec.get("build_hint", "")
        self.timeout = float(spec.get("timeout_s", 300))
        self.env = {k: self._fill(v, places) for k, v in spec.get("env", {}).items()}
        self.cwd = self._fill(spec.get("cwd", "{root}"), places)
        self.is_floor = self.name == FLOOR or bool(spec.get("floor"))
        self.targets = spec.get("targets", [])
        self.samples = {}   # metric -> [values, one per round]
        self.meta = {}      # metric -> {"unit", "better", "label"}
        self.info = []      # the "info" object of each run
        self.seconds = []   # wall time of each run
        self.floor_run = {} # floor name -> for each run: the index of that floor's run just before it

    @staticmethod
    def _fill(text, places):
        """Replaces {root}, {build}, ...; other braces are left alone."""
        def one(m):
            if m.group(1) not in places:
                die("unknown placeholder {%s} in %r (known: %s)" % (m.group(1), text, ", ".join(sorted(places))), 2)
            return places[m.group(1)]
        return re.sub(r"\{([a-z_]+)\}", one, text)

    def missing(self):
        return [r for r in self.requires if not os.path.exists(r)]

    def run(self):
        env = dict(os.environ)
        env.update(self.env)
        started = time.monotonic()
        try:
            proc = subprocess.run(self.command, cwd=self.cwd, env=env, timeout=self.timeout,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  universal_newlines=True)
        except subprocess.TimeoutExpired as e:
            tail = (e.stderr or b"")[-2000:]
            if isinstance(tail, bytes):
                tail = tail.decode("utf-8", "replace")
            die("suite %s timed out after %.0f s: %s\n%s" % (self.name, self.timeout,
                                                              " ".join(self.command), tail))
        except OSError as e:
            die("suite %s cannot start %s: %s" % (self.name, self.command[0], e))
        self.seconds.append(time.monotonic() - started)
        if proc.returncode != 0:
            die("suite %s FAILED (exit %d): %s\n%s" % (self.name, proc.returncode,
                                                       " ".join(self.command),
                                                       proc.stderr[-4000:]))
        result = parse_output(proc.stdout)
        if result is None:
            die("suite %s printed no JSON object with \"metrics\":\n%s" % (self.name, proc.stdout[-2000:]))
        for name, m in result["metrics"].items():
            if isinstance(m, dict):
                value = m.get("value")
                meta = {k: m[k] for k in ("unit", "better", "label") if k in m}
            else:
                value, meta = m, {}
            if not isinstance(value, (int, float)):
                die("suite %s: metric %s has no numeric value" % (self.name, name))
            self.samples.setdefault(name, []).append(float(value))
            self.meta.setdefault(name, meta)
        self.info.append(result.get("info", {}))

    def median(self, metric):
        v = self.samples.get(metric)
        return statistics.median(v) if v else None


def parse_output(stdout):
    """The whole stdout as one JSON object, or else its last line that is one."""
    candidates = [stdout] + [l for l in reversed(stdout.splitlines()) if l.strip().startswith("{")]
    for text in candidates:
        try:
            obj = json.loads(text)
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("metrics"), dict):
            return obj
    return None


def load_suites(places, only):
    suites = {}
    for path in sorted(glob.glob(os.path.join(HERE, "cases", "*.json"))):
        with open(path) as f:
            try:
                spec = json.load(f)
            except ValueError as e:
                die("%s: %s" % (path, e), 2)
        s = Suite(path, spec, places)
        if s.name in suites:
            die("suite %s defined twice (%s, %s)" % (s.name, suites[s.name].path, path), 2)
        suites[s.name] = s
    if FLOOR not in suites:
        die("no floor suite (benches/cases/floor.json)", 2)
    if only:
        unknown = [n for n in only if n not in suites]
        if unknown:
            die("unknown suite(s): %s (have: %s)" % (", ".join(unknown), ", ".join(sorted(suites))), 2)
        # Also the suites whose metrics the chosen ones are compared with.
        keep, todo = {n for n, s in suites.items() if s.is_floor}, list(only)
        while todo:
            n = todo.pop()
            if n in keep:
                continue
            keep.add(n)
            for t in suites[n].targets:
                ref = t.get("of", "").partition(".")[0]
                if ref in suites and ref not in keep:
                    todo.append(ref)
        suites = {n: s for n, s in suites.items() if n in keep}
    return suites


# ---- targets and the table --------------------------------------------------

def fmt_num(v):
    if v is None:
        return "-"
    a = abs(v)
    if a >= 10000:
        return "{:,.0f}".format(v)
    if a >= 100:
        return "%.0f" % v
    if a >= 10:
        return "%.1f" % v
    return "%.2f" % v


def fmt_val(v, unit):
    return "-" if v is None else (fmt_num(v) + (" " + unit if unit else ""))


def lookup(suites, ref):
    """'suite.metric' -> (median, unit)."""
    suite, _, metric = ref.partition(".")
    s = suites.get(suite)
    if not s or metric not in s.samples:
        return None, ""
    return s.median(metric), s.meta.get(metric, {}).get("unit", "")


def spread(values):
    m = statistics.median(values)
    if len(values) < 2 or not m:
        return None
    return (max(values) - min(values)) / abs(m) * 100.0


def floor_order(suites):
    """The floors, "floor" first, then the other floors by name."""
    return [FLOOR] + sorted(n for n, s in suites.items() if s.is_floor and n != FLOOR)


def build_row(suites, name, metric, t):
    """The table row of one metric of suite `name` against one target entry
    `t` (or {} for a metric without one)."""
    s = suites[name]
    values = s.samples[metric]
    meta = s.meta.get(metric, {})
    unit = meta.get("unit", "")
    med = s.median(metric)
    row = {
        "case": "%s.%s" % (name, metric), "label": meta.get("label", ""),
        "unit": unit, "better": meta.get("better", ""), "median": med,
        "min": min(values), "max": max(values), "samples": values,
        "spread_pct": spread(values), "ref": t.get("of"), "ref_median": None,
        "ratio": None, "target": None, "met": None, "aim": bool(t.get("aim")),
    }
    if "of" in t:
        ref_med, ref_unit = lookup(suites, t["of"])
        row["ref_median"], row["ref_unit"] = ref_med, ref_unit
        if ref_med:
            row["ratio"] = med / ref_med
        # Each run against that floor's run right before it (for the record).
        ref_suite, _, ref_metric = t["of"].partition(".")
        ref_values = suites[ref_suite].samples.get(ref_metric, []) if ref_suite in suites else []
        runs = s.floor_run.get(ref_suite, [])
        if len(runs) == len(values):
            paired = [v / ref_values[i] for v, i in zip(values, runs) if i < len(ref_values) and ref_values[i]]
            if paired:
                row["paired_ratios"] = paired
                row["paired_ratio_median"] = statistics.median(paired)
    rule = t.get("rule")
    if rule:
        if rule not in ("<=", ">="):
            die("suite %s: rule %r for %s must be <= or >=" % (name, rule, metric), 2)
        if "factor" in t:
            row["target"] = "%s %g× %s" % (rule, t["factor"], t["of"].split(".", 1)[0])
            got, want = row["ratio"], t["factor"]
        else:
            row["target"] = "%s %g %s" % (rule, t["value"], unit)
            got, want = med, t["value"]
        if row["aim"]:
            row["target"] = "aim " + row["target"]
        if got is not None:
            row["met"] = got <= want if rule == "<=" else got >= want
    return row


def build_rows(suites):
    """One row per metric and target entry (a metric with two references,
    e.g. both floors, gets two rows), floors first."""
    rows = []
    floors = floor_order(suites)
    for name in floors + sorted(n for n in suites if n not in floors):
        s = suites[name]
        targeted = {}
        for t in s.targets:
            targeted.setdefault(t["metric"], []).append(t)
        for metric in s.samples:
            for t in targeted.get(metric) or [{}]:
                rows.append(build_row(suites, name, metric, t))
        for metric in targeted:
            if metric not in s.samples:
                log("run.py: warning: suite %s has a target for %s but never reported it" % (name, metric))
    return rows


def met_cell(r):
    if r["met"] is None:
        return "-"
    if r.get("aim"):
        return "aim met" if r["met"] else "not yet"
    return "yes" if r["met"] else "NO"


COLUMNS = ["case", "median", "floor / ref", "ratio", "per round", "target", "met?", "spread"]


def row_cells(r):
    ref = "-"
    if r["ref"]:
        ref = fmt_val(r["ref_median"], r.get("ref_unit", ""))
        if not r["ref"].startswith(FLOOR + "."):
            ref += " (%s)" % r["ref"].split(".", 1)[0]
    return [
        r["case"],
        fmt_val(r["median"], r["unit"]),
        ref,
        "-" if r["ratio"] is None else "%.2f×" % r["ratio"],
        "-" if r.get("paired_ratio_median") is None else "%.2f×" % r["paired_ratio_median"],
        r["target"] or "-",
        met_cell(r),
        "-" if r["spread_pct"] is None else "%.0f%%" % r["spread_pct"],
    ]


def text_table(rows):
    cells = [COLUMNS] + [row_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = []
    for i, c in enumerate(cells):
        lines.append("  ".join(x.ljust(w) if j == 0 else x.rjust(w) for j, (x, w) in enumerate(zip(c, widths))).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows):
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" + "---:|" * (len(COLUMNS) - 1)]
    for r in rows:
        c = row_cells(r)
        c[0] = "`%s`" % c[0]
        if r["met"] is False and not r.get("aim"):
            c[COLUMNS.index("met?")] = "**NO**"
        out.append("| " + " | ".join(x.replace("|", "\\|") for x in c) + " |")
    return "\n".join(out)


# ---- main -------------------------------------------------------------------

def busy_cpu_seconds():
    """Non-idle CPU seconds of the whole machine since boot (/proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    # guest time is already counted in user/nice
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def describe_run(r):
    h = r["host"]
    text = "%d rounds, scale %g, %.0f s, %d CPUs; load average %.2f before, %.2f after" % (
        r["rounds"], r["scale"], r["seconds"], h["cpus"], h["loadavg_before"][0], h["loadavg_after"][0])
    if r.get("keep_awake"):
        text += "; --keep-awake"
    if h.get("others_cpu_share") is not None:
        text += "; other processes used %.0f%% of the CPUs meanwhile" % (h["others_cpu_share"] * 100)
    text += "\n%s, commit %s%s" % (r["date"], r["git"].get("commit") or "?",
                                  " (with uncommitted changes)" if r["git"].get("dirty") else "")
    if h.get("busy"):
        text += "\nnote: the machine was busy; ratios to the floors are more reliable than absolute figures"
    return text


def git_state():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, universal_newlines=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               universal_newlines=True).stdout.strip() != ""
        return {"commit": head or None, "dirty": dirty}
    except OSError:
        return {"commit": None, "dirty": None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="runs of each suite, each right after a run of the floors (default 5)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every suite's iteration counts (default 1)")
    ap.add_argument("--only", default="", help="comma-separated suites to run (the floors and the suites "
                    "they are compared with always run)")
    ap.add_argument("--build-dir", default=os.environ.get("MF_BUILD_DIR", os.path.join(ROOT, "build")),
                    help="CMake build directory ({build}; default build/)")
    ap.add_argument("--cargo-target", default=os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                    help="cargo target directory ({cargo_target}; default target/)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results.json"), help="results file")
    ap.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    ap.add_argument("--list", action="store_true", help="list the suites and their commands, then exit")
    ap.add_argument("--report", metavar="RESULTS_JSON",
                    help="print the table of an earlier run's results file (with --markdown: also as Markdown), run nothing")
    ap.add_argument("--strict", action="store_true", help="a suite whose programs are missing fails the run")
    ap.add_argument("--fail-on-miss", action="store_true", help="exit 3 when a target (not an aim) is not met")
    ap.add_argument("--keep-awake", action="store_true",
                    help="run one lowest-priority busy loop per CPU meanwhile, so idle (virtual) CPUs do not "
                    "add their wake-up latency to every message (see docs/performance.md)")
    args = ap.parse_args()
    if args.rounds < 1 or args.scale <= 0:
        die("--rounds must be >= 1 and --scale > 0", 2)

    if args.report:
        with open(args.report) as f:
            saved = json.load(f)
        print(text_table(saved["rows"]))
        print("\n" + describe_run(saved))
        if args.markdown:
            print()
            print(markdown_table(saved["rows"]))
        return 0

    places = {
        "root": ROOT,
        "build": os.path.abspath(args.build_dir),
        "cargo_target": os.path.abspath(args.cargo_target),
        "python": sys.executable,
        "venv_python": os.path.join(os.path.abspath(args.build_dir), "venv", "bin", "python"),
        "scale": repr(args.scale),
    }
    only = [n for n in args.only.split(",") if n]
    suites = load_suites(places, only)
    if args.list:
        for s in suites.values():
            print("%-10s %s\n           %s" % (s.name, s.description, " ".join(s.command)))
        return 0

    skipped = {}
    for name, s in list(suites.items()):
        missing = s.missing()
        if missing:
            msg = "missing %s (build with: %s)" % (", ".join(missing), s.build_hint or "?")
            if name == FLOOR or args.strict or name in only:
                die("suite %s: %s" % (name, msg))
            log("run.py: skipping suite %s: %s" % (name, msg))
            skipped[name] = msg
            del suites[name]
    floors = [suites[n] for n in floor_order(suites)]
    others = [s for n, s in sorted(suites.items()) if not s.is_floor]

    cpus = os.cpu_count() or 1
    spinners = []
    if args.keep_awake:
        spin = "import os\nos.nice(19)\nwhile True:\n    pass\n"
        spinners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(cpus)]
        time.sleep(0.2)
    load_before = os.getloadavg()
    cpu_before, ours_before = busy_cpu_seconds(), os.times()
    started = time.monotonic()
    try:
        for rnd in range(args.rounds):
            for s in others or [None]:
                for f in floors:
                    f.run()
                done = "round %d/%d: %s" % (rnd + 1, args.rounds,
                                            ", ".join("%s %.1f s" % (f.name, f.seconds[-1]) for f in floors))
                if s:
                    for f in floors:
                        s.floor_run.setdefault(f.name, []).append(len(f.seconds) - 1)
                    s.run()
                    done += ", %s %.1f s" % (s.name, s.seconds[-1])
                log(done)
        cpu_after = busy_cpu_seconds()
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    load_after = os.getloadavg()
    elapsed = time.monotonic() - started
    # CPU time the rest of the machine used while we ran (all busy time minus
    # our children's; the busy loops of --keep-awake are reaped above, so they
    # count as ours).
    ours = (os.times().children_user - ours_before.children_user
            + os.times().children_system - ours_before.children_system)
    others = None
    if cpu_before is not None and cpu_after is not None:
        others = max(0.0, (cpu_after - cpu_before - ours) / (elapsed * cpus))

    rows = build_rows(suites)
    print(text_table(rows))
    busy = (others if others is not None else load_before[0] / cpus) > 0.25
    result = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "git": git_state(),
        "host": {"machine": platform.machine(), "system": platform.platform(), "cpus": cpus,
                 "loadavg_before": load_before, "loadavg_after": load_after,
                 "others_cpu_share": others, "busy": busy},
        "rounds": args.rounds, "scale": args.scale, "seconds": round(elapsed, 1),
        "keep_awake": args.keep_awake,
        "suites": {n: {"description": s.description, "command": s.command, "seconds": s.seconds,
                       "samples": s.samples, "meta": s.meta, "info": s.info, "targets": s.targets}
                   for n, s in suites.items()},
        "skipped": skipped,
        "rows": rows,
        "all_met": all(r["met"] is not False for r in rows if not r.get("aim")),
    }
    print("\n" + describe_run(result))
    if args.markdown:
        print()
        print(markdown_table(rows))
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print("results: %s" % os.path.relpath(out, os.getcwd()))
    if args.fail_on_miss and not result["all_met"]:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
