#!/usr/bin/env python3
"""`make hub-load`: K simulated students at once on a hub of the shared install.

Each student, in their own thread and at the same time: logs in through the hub's form
(first use: sets their password), gets an API token, starts their server through the REST
API, opens notebook 01 in it (a session, as JupyterLab does) and runs its cells in class mode
(cells tagged no-ejecutar / skip-execution keep their outputs) through their own kernel over
the Jupyter server's websocket. Measures, per student: server start, time to a ready kernel,
the first aula cell (device_info()), the notebook's wall time, the CPU time of their whole
session (their cgroup), the peak RSS of all their processes and of their kernel; checks every student got the same figures (test acc, best
val acc) and the expected ones. Stops every server and the hub, checks nothing is left
running as the test users, writes OUT (JSON) and the measured kernel RSS to
PREFIX/state/kernel-rss.json (the hub sizes its warm-kernel pool and memory limit with it).

    hub/tests/load.py [--students K] [--out out/hub-load.json] [--port 8100]
"""
import argparse
import datetime
import json
import os
import platform
import re
import signal
import sys
import threading
import time

from hubclient import PREFIX, Hub, RssSampler, Student, class_cells, log

NOTEBOOK = "notebooks/01_extraccion_de_caracteristicas.ipynb"
FIGURES = re.compile(r"test acc ([0-9.]+), mejor val acc ([0-9.]+)")
# What notebook 01 gives, by the precision of the frozen base (aula picks bf16 where it
# measures faster, README "GPU"): fp32, the README's and the figures; bf16 (AMX),
# what `make run` records on this 2-core Xeon (out/clase/metrics.json).
EXPECTED = {"fp32": {"test_acc": 0.891, "best_val_acc": 0.906},
            "bf16": {"test_acc": 0.890, "best_val_acc": 0.908}}


def cpu_seconds(port, name):
    """The CPU time of everything the student's server ran so far (its cgroup, see
    hub/aula_spawner.py): the server, the template copy, their kernels and spares, the cells."""
    try:
        with open(f"/sys/fs/cgroup/cpuacct/aula-hub-{port}.{name}/cpuacct.usage") as f:
            return round(int(f.read()) / 1e9, 1)
    except OSError:
        try:
            with open(f"/sys/fs/cgroup/aula-hub-{port}.{name}/cpu.stat") as f:
                return round(int(f.read().split("usage_usec")[1].split()[0]) / 1e6, 1)
        except (OSError, IndexError, ValueError):
            return None


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2 if xs else None


def run_student(hub, name, barrier, cells, result):
    s = Student(hub, name)
    r = result
    try:
        barrier.wait()
        t0 = time.time()
        if not s.login():
            raise RuntimeError(f"{name}: the hub refused the login")
        s.get_token()
        r["login_s"] = round(time.time() - t0, 2)
        r["server_start_s"] = round(s.start_server(), 2)
        t1 = time.time()
        k = s.open_notebook(NOTEBOOK)
        r["kernel_ready_s"] = round(k.ready_s, 2)
        log(f"{name}: server in {r['server_start_s']} s, kernel ready in {r['kernel_ready_s']} s")
        r["cells"] = []
        t2 = time.time()
        text = ""
        for i, code in cells:
            secs, text = k.run(code)
            r["cells"].append({"cell": i, "s": round(secs, 2)})
            log(f"{name}: cell {i} {secs:.1f} s")
        r["first_aula_cell_s"] = r["cells"][0]["s"]  # device_info(): aula's first call
        r["notebook_wall_s"] = round(time.time() - t2, 1)
        r["open_to_end_s"] = round(time.time() - t1, 1)
        m = FIGURES.search(text)
        if not m:
            raise RuntimeError(f"{name}: no figures in the last cell's output: {text[:300]!r}")
        r["test_acc"], r["best_val_acc"] = float(m.group(1)), float(m.group(2))
        k.close()
        # What the notebook recorded in the student's home (aula::metrics).
        metrics = json.load(open(os.path.expanduser(f"~{name}/notebooks/out/metrics.json")))["feature_extraction"]
        r["features_from_cache"] = metrics.get("features_from_cache")
        r["device"] = metrics.get("device")
        r["cpu_s"] = cpu_seconds(hub.port, name)
        s.stop_server()
        r["ok"] = True
    except Exception as e:  # reported per student; the run fails
        r["ok"] = False
        r["error"] = f"{type(e).__name__}: {e}"
        log(f"{name}: FAILED: {e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", type=int, default=4)
    ap.add_argument("--out", default="out/hub-load.json")
    ap.add_argument("--port", type=int, default=8100)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("hub-load: run as root (it creates the students' Unix users)")
    cells = class_cells(os.path.join(PREFIX, "src", NOTEBOOK))
    names = [f"alumno{i:02d}" for i in range(1, args.students + 1)]
    hub = Hub(names, "profe-carga", args.port)
    # SIGTERM/SIGINT (make interrupted, a CI timeout): stop the hub and its servers first.
    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)

    results = {n: {"student": n} for n in names}
    sampler = RssSampler(names)
    t0 = time.time()
    load_before = os.getloadavg()
    try:
        hub.start()
        sampler.start()
        barrier = threading.Barrier(len(names))
        threads = [threading.Thread(target=run_student, args=(hub, n, barrier, cells, results[n])) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sampler.stop()
        hub.stop()
        time.sleep(1)
        left = hub.kill_leftovers()
        if left:
            log(f"hub-load: {len(left)} processes were left running as the test users after the hub stopped; killed")
    wall = time.time() - t0
    for n in names:
        results[n]["peak_rss_bytes"] = sampler.peak_total[n]
        results[n]["peak_kernel_rss_bytes"] = sampler.peak_kernel[n]

    ok = [r for r in results.values() if r.get("ok")]
    figures = {(r["test_acc"], r["best_val_acc"]) for r in ok}
    problems = [f"{r['student']}: {r['error']}" for r in results.values() if not r.get("ok")]
    if len(figures) > 1:
        problems.append(f"students got different figures: {sorted(figures)}")
    for r in ok:
        precision = "bf16" if "bf16" in (r.get("device") or "") else "fp32"
        r["precision"] = precision
        if not r.get("features_from_cache"):
            problems.append(f"{r['student']}: the features were not read from the shared cache")
        for key, want in EXPECTED[precision].items():
            if abs(r[key] - want) > 0.0005:
                problems.append(f"{r['student']}: {key} {r[key]} (expected {want} with {precision})")
    if left:
        problems.append(f"{len(left)} processes left running as the test users")
    kernel_rss = max(sampler.peak_kernel.values())
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "students": len(names), "notebook": NOTEBOOK, "cells_run": len(cells),
        "machine": {"cpu": cpu, "cores": os.cpu_count(),
                    "mem_total_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
                    "python": platform.python_version()},
        "wall_s": round(wall, 1),
        # The machine may be shared: its load before the run (1, 5, 15 min) and at the end.
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "kernel_rss_bytes": kernel_rss,
        "median": {k: median([results[n].get(k) for n in names]) for k in
                   ("server_start_s", "kernel_ready_s", "first_aula_cell_s", "notebook_wall_s", "cpu_s",
                    "peak_rss_bytes", "peak_kernel_rss_bytes")},
        "per_student": [results[n] for n in names],
        "same_figures": len(figures) == 1 and len(ok) == len(names),
        "problems": problems,
        "ok": not problems,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".tmp", "w") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
    os.replace(args.out + ".tmp", args.out)
    if ok and kernel_rss:
        with open(f"{PREFIX}/state/kernel-rss.json", "w") as f:
            json.dump({"kernel_rss_bytes": kernel_rss, "measured": report["date"], "by": "hub/tests/load.py"}, f)
    for n in names:
        r = results[n]
        log(f"{n}: ok={r.get('ok')} server {r.get('server_start_s')} s, kernel ready {r.get('kernel_ready_s')} s, "
            f"first aula cell {r.get('first_aula_cell_s')} s, notebook {r.get('notebook_wall_s')} s, "
            f"CPU {r.get('cpu_s')} s, peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB (kernel {r['peak_kernel_rss_bytes'] / 2**30:.2f}), "
            f"test acc {r.get('test_acc')}, best val acc {r.get('best_val_acc')}")
    log(f"hub-load: {len(names)} students in {wall:.0f} s → {args.out}")
    if not problems:
        hub.remove_state()
    if problems:
        print("hub-load: FAILED\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"hub-load: ok, {len(names)} students, same figures {sorted(figures)[0]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
