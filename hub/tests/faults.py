#!/usr/bin/env python3
"""Isolation and faults of aula's hub (part of `make test-hub`; run as root).

  1. an unknown user, and a listed one with a wrong password, are refused;
  2. a student cannot read or write another student's home, nor write the shared install
     (caches, template, notebooks) nor read the hub's state, checked as that Unix user and
     from inside their aula kernel (a Rust cell);
  3. a student's server killed (SIGKILL) in the middle of a cell: the hub notices, nothing of
     it is left running, the server starts again, the student's edited notebook is intact
     and a new kernel works; a cell that allocates the student's whole memory limit is
     OOM-killed in their cgroup while their server and the other student's go on;
  4. the hub restarted (SIGTERM, start again on the same state): every user is still there,
     logs in with the same password, and finds their files;
  5. the idle culler stops a server left untouched (timeout shortened to 40 s).

    hub/tests/faults.py [--port 8200]
"""
import argparse
import os
import pwd
import re
import subprocess
import sys
import time

import psutil

from hubclient import PREFIX, CellError, Hub, Student, log

NOTEBOOK = "notebooks/01_extraccion_de_caracteristicas.ipynb"
MARK = "// editado por el alumno: no se debe perder"


def check(cond, what, failures):
    log(("ok    " if cond else "FAIL  ") + what)
    if not cond:
        failures.append(what)


def as_user(user, *cmd):
    return subprocess.run(["runuser", "-u", user, "--", *cmd], capture_output=True, text=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8200)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("hub faults: run as root")
    a, b = "alumno01", "alumno02"
    hub = Hub([a, b], "profe-carga", args.port)
    failures = []
    try:
        hub.start()
        sa, sb = Student(hub, a), Student(hub, b)

        # 1. Who gets in.
        check(not Student(hub, "intruso").login(), "an unknown user is refused", failures)
        check(sa.login() and sb.login(), "listed students log in (first use sets the password)", failures)
        check(not Student(hub, a, password="otra-clave-123").login(), "a wrong password is refused", failures)
        sa.get_token()
        sb.get_token()
        r = sa.api("GET", f"/users/{b}")
        check(r.status_code in (403, 404), f"{a}'s token cannot read {b}'s hub record ({r.status_code})", failures)
        sa.start_server()
        sb.start_server()
        r = requests_get_other(sa, b)
        check(r.status_code in (403, 404) or "/hub/login" in r.url or r.status_code == 302,
              f"{a}'s token cannot use {b}'s server ({r.status_code})", failures)

        # 2. Isolation, as the Unix user.
        home_b = pwd.getpwnam(b).pw_dir
        shared_home = open(f"{PREFIX}/kernel-home").read().strip()
        check(as_user(a, "cat", f"{home_b}/{NOTEBOOK}").returncode != 0, f"{a} cannot read {b}'s notebook", failures)
        check(as_user(a, "ls", home_b).returncode != 0, f"{a} cannot list {b}'s home", failures)
        check(as_user(a, "touch", f"{home_b}/x").returncode != 0, f"{a} cannot write in {b}'s home", failures)
        for path in (f"{PREFIX}/cache/features/x", f"{PREFIX}/cache/weights/x", f"{shared_home}/template/x",
                     f"{PREFIX}/src/notebooks/x", f"{PREFIX}/data/cats_and_dogs_small/x", f"{PREFIX}/libtorch/lib/x"):
            check(as_user(a, "touch", path).returncode != 0, f"{a} cannot write {path}", failures)
        weights = f"{PREFIX}/cache/weights/vgg16_imagenet_notop.safetensors"
        check(as_user(a, "sh", "-c", f": >> {weights}").returncode != 0, f"{a} cannot write into the shared weights", failures)
        check(as_user(a, "ls", f"{PREFIX}/state").returncode != 0, f"{a} cannot read the hub's state (passwords)", failures)

        # ... and from their kernel: the cell runs as the student.
        k = sa.open_notebook(NOTEBOOK)
        _, out = k.run(
            f'(std::env::var("USER").unwrap_or_default(), std::fs::read_dir("{home_b}").is_err(), '
            f'std::fs::write("{PREFIX}/cache/features/x", b"x").is_err(), '
            f'std::fs::read("{weights}").map(|w| w.len() > 1_000_000).unwrap_or(false))')
        check(out.strip() == f'("{a}", true, true, true)',
              f"in {a}'s kernel: runs as {a}, cannot list {b}'s home nor write the shared cache, reads the weights ({out.strip()})",
              failures)

        # 3. The server killed in the middle of a cell.
        nb = sa.notebook(NOTEBOOK)
        nb["cells"][2]["source"] = MARK + "\n" + "".join(nb["cells"][2]["source"])
        sa.save_notebook(NOTEBOOK, nb)
        uid = pwd.getpwnam(a).pw_uid
        before = {p.pid for p in psutil.process_iter(["uids"]) if p.info["uids"].real == uid}
        # A cell that runs for a while (sleeps in the cell process), sent without waiting.
        k._send("shell", "execute_request", {"code": "std::thread::sleep(std::time::Duration::from_secs(120)); 1",
                                             "silent": False, "store_history": True, "user_expressions": {},
                                             "allow_stdin": False, "stop_on_error": True})
        time.sleep(5)
        server = [p for p in psutil.process_iter(["uids", "cmdline"])
                  if p.info["uids"].real == uid and any("jupyterhub-singleuser" in c for c in p.info["cmdline"] or [])]
        check(len(server) == 1, f"{a}'s server process found ({len(server)})", failures)
        for p in server:
            p.kill()
        t0 = time.time()
        while time.time() - t0 < 90 and sa.user().get("servers", {}).get(""):
            time.sleep(1)
        noticed = time.time() - t0
        check(not sa.user().get("servers", {}).get(""), f"the hub noticed the killed server ({noticed:.0f} s)", failures)
        restart_s = sa.start_server()
        alive = [pid for pid in before if psutil.pid_exists(pid)]
        check(not alive, f"nothing of the killed server is left running ({len(alive)} processes)", failures)
        nb2 = sa.notebook(NOTEBOOK)
        check("".join(nb2["cells"][2]["source"]).startswith(MARK),
              f"{a}'s edited notebook is intact after the restart ({restart_s:.0f} s)", failures)
        k = sa.open_notebook(NOTEBOOK)
        _, out = k.run("1 + 1")
        check(out.strip() == "2", f"a new kernel in the restarted server works ({k.ready_s:.1f} s to ready)", failures)

        # 3b. The memory limit: a cell that fills the student's whole limit is OOM-killed in
        # their cgroup; their server (and everyone else) goes on.
        cg = f"/sys/fs/cgroup/memory/aula-hub-{args.port}.{a}"
        if os.path.exists(f"{cg}/memory.limit_in_bytes"):
            limit = int(open(f"{cg}/memory.limit_in_bytes").read())
            try:
                k.run(f"let v = vec![1u8; {limit}]; v.len()", timeout=300)
                killed = False
            except CellError as e:
                killed = True
                log(f"      the cell: {str(e).splitlines()[-1][:200]}")
            oom = int(re.search(r"oom_kill (\d+)", open(f"{cg}/memory.oom_control").read()).group(1))
            check(killed and oom >= 1, f"a cell allocating {limit / 2**30:.1f} GiB (the limit) is OOM-killed "
                  f"in {a}'s cgroup ({oom} OOM kills)", failures)
            check(sa.jupyter("GET", "/status").ok, f"{a}'s server still answers after the OOM kill", failures)
            check(sb.jupyter("GET", "/status").ok, f"{b}'s server was not touched", failures)
        else:
            log("skip  the memory limit test needs cgroup v1's memory controller")
        try:
            k.close()
        except Exception:
            pass

        # 4. The hub restarted on the same state.
        hub.stop()
        check(not hub.leftovers(), "stopping the hub stopped every server and kernel", failures)
        hub.start()
        sa2 = Student(hub, a)
        check(sa2.login(), f"{a} logs in with the same password after the hub restarted", failures)
        sa2.get_token()
        r = sa2.api("GET", f"/users/{a}")
        check(r.ok and r.json()["name"] == a, f"{a} is still a hub user", failures)
        admin = Student(hub, "profe-carga")
        check(admin.login(), "the instructor logs in", failures)
        admin.get_token()
        names = {u["name"] for u in admin.api("GET", "/users").json()}
        check({a, b, "profe-carga"} <= names, f"the instructor sees every user ({sorted(names)})", failures)
        sa2.start_server()
        nb3 = sa2.notebook(NOTEBOOK)
        check("".join(nb3["cells"][2]["source"]).startswith(MARK), f"{a}'s files survived the hub's restart", failures)
        # 5. The idle culler (jupyterhub-idle-culler): with a 40 s timeout, checked every
        #    10 s, an untouched server is stopped within about a minute.
        hub.stop()
        hub.start(AULA_HUB_IDLE="40", AULA_HUB_CULL_EVERY="10")
        sb2 = Student(hub, b)
        sb2.login()
        sb2.get_token()
        sb2.start_server()
        t0 = time.time()
        while time.time() - t0 < 150 and sb2.user().get("servers", {}).get(""):
            time.sleep(2)
        culled = not sb2.user().get("servers", {}).get("")
        check(culled, f"the idle culler stopped {b}'s idle server ({time.time() - t0:.0f} s after it started)", failures)

        # Put the notebook back as distributed (the load test compares outputs, not sources,
        # but a clean home is kinder to the next run).
        os.remove(os.path.expanduser(f"~{a}/{NOTEBOOK}"))
    except Exception as e:
        failures.append(f"{type(e).__name__}: {e}")
        log(f"FAIL  {type(e).__name__}: {e}\n{hub.tail()}")
    finally:
        hub.stop()
        left = hub.kill_leftovers()
        if left:
            failures.append(f"{len(left)} processes left running as the test users")
    if not failures:
        hub.remove_state()
    if failures:
        print("hub faults: FAILED\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print("hub faults: ok", file=sys.stderr)
    return 0


def requests_get_other(student, other):
    import requests
    return requests.get(f"{student.hub.url}/user/{other}/api/contents", headers=student.auth, timeout=30,
                        allow_redirects=False)


if __name__ == "__main__":
    sys.exit(main())
