#!/usr/bin/env python3
"""Warm "Rust · aula" kernels: a pool of pre-started evcxr kernels and the proxy that hands one
to the Jupyter client that asked for a kernel.

Why: evcxr runs rust-analyzer in-process to infer the type of every `let`; for aula's dependency
graph (≈ 170 crates) that costs 20-30 s of CPU in every new kernel, whatever is precompiled. A
kernel started ahead of time has paid it.

How (kernel/launch.sh calls this; see kernel/README.md):
  refill HOME KEY LAUNCH   (in the background, detached) keeps AULA_KERNEL_POOL spares (default 1)
      for KEY, and at most AULA_KERNEL_POOL_MAX (default 2) in all, each ≈ 1.3 GB of memory: copies the template, starts evcxr_jupyter through `LAUNCH --private`, waits until
      it answers, marks it ready, then supervises it until it is claimed and released, dies,
      idles for AULA_KERNEL_POOL_IDLE seconds (default 3600) or the template changes. It
      waits AULA_KERNEL_POOL_DELAY seconds (default 30) first, not to slow the kernel that
      asked for it.
  serve HOME KEY CONNECTION_FILE LAUNCH   (exec'd by the launcher, so Jupyter's kernel process
      is this proxy) claims a ready spare and forwards the five Jupyter channels between the
      client's ports (CONNECTION_FILE, signed with its key) and the spare's (unsigned, on
      127.0.0.1) with proxy.py, which also turns interrupts into aula's stop flag; with no
      spare ready it execs `LAUNCH --cold` instead (behind the same proxy).

KEY is a hash of the template, the kernel configuration, the working directory and the
environment (less per-launch noise such as JPY_*): a spare only serves a kernel that would
have started exactly like it. Claiming is atomic (unlinking the ready marker); the claimer holds
a shared lock on the spare's claim.lock, which the supervisor waits for before it kills the
spare and deletes its directory.
"""

import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

import proxy  # (kernel/proxy.py, next to this file)


def log(*a):
    print("aula-pool:", *a, file=sys.stderr, flush=True)


def pool_dirs(home):
    pool = os.path.join(home, "pool")
    ready = os.path.join(pool, "ready")
    os.makedirs(ready, exist_ok=True)
    return pool, ready


def alive_pid(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def read_int(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def fingerprint(home):
    try:
        with open(os.path.join(home, "template.fingerprint")) as f:
            return f.read().strip()
    except OSError:
        return ""


# --------------------------------------------------------------------------------- refill
def kill_group(pgid):
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        t = time.time()
        while time.time() - t < wait:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def sweep(pool, ready):
    """Removes spares whose supervisor is gone (killed, or the machine stopped): their
    supervisor.lock is free. Kills their evcxr if it still runs."""
    for name in os.listdir(pool):
        d = os.path.join(pool, name)
        if not name.startswith("s."):
            continue
        try:
            f = open(os.path.join(d, "supervisor.lock"))
        except OSError:
            if time.time() - os.stat(d).st_mtime > 60:  # half-made (no lock yet) and old
                shutil.rmtree(d, ignore_errors=True)
            continue
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # looked after
            for m in os.listdir(ready):
                if m.endswith("." + name[2:]):
                    try:
                        os.unlink(os.path.join(ready, m))
                    except FileNotFoundError:
                        pass
            pid = read_int(os.path.join(d, "pid"))
            try:  # still this spare's evcxr (not a reused pid)?
                with open(f"/proc/{pid}/cmdline", "rb") as c:
                    ours = os.path.join(d, "connection.json").encode() in c.read()
            except (OSError, TypeError):
                ours = False
            if ours:
                kill_group(pid)
            shutil.rmtree(d, ignore_errors=True)
            log(f"removed {d}, left by a supervisor that is gone")


def refill(home, key, launch):
    pool, ready = pool_dirs(home)
    want = int(os.environ.get("AULA_KERNEL_POOL", "1"))
    idle = float(os.environ.get("AULA_KERNEL_POOL_IDLE", "3600"))
    if want <= 0:
        return 0
    # Let the kernel that triggered this start and run its first cells without a spare's
    # start-up (≈ 30 s of CPU) competing with it.
    time.sleep(float(os.environ.get("AULA_KERNEL_POOL_DELAY", "30")))
    lock = open(os.path.join(pool, f"refill.{key}.lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another refill for this key is at work
    sweep(pool, ready)
    # Spares that are starting or ready (not claimed, not dead): of this key, and in all.
    keys = [m.rsplit(".", 1)[0] for m in os.listdir(ready)]
    for name in os.listdir(pool):
        d = os.path.join(pool, name)
        if name.startswith("s.") and os.path.exists(os.path.join(d, "starting")):
            try:
                with open(os.path.join(d, "key")) as f:
                    k = f.read().strip()
            except OSError:
                continue
            pid = read_int(os.path.join(d, "pid"))
            if pid and alive_pid(pid):
                keys.append(k)
    if keys.count(key) >= want or len(keys) >= int(os.environ.get("AULA_KERNEL_POOL_MAX", "2")):
        return 0

    spare = os.path.join(pool, "s." + secrets.token_hex(4))
    sid = os.path.basename(spare)[2:]
    os.makedirs(os.path.join(spare, "tmp"))
    # Held for as long as this process looks after the spare (see sweep).
    supervisor = open(os.path.join(spare, "supervisor.lock"), "w")
    fcntl.flock(supervisor, fcntl.LOCK_EX)
    for name, text in (("key", key), ("starting", ""), ("fingerprint", fingerprint(home))):
        with open(os.path.join(spare, name), "w") as f:
            f.write(text)
    open(os.path.join(spare, "claim.lock"), "w").close()
    conn_file = os.path.join(spare, "connection.json")
    proxy.back_connection(conn_file)
    out = open(os.path.join(spare, "log"), "w")
    proc = subprocess.Popen([launch, "--private", os.path.join(spare, "tmp"), home, conn_file],
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    with open(os.path.join(spare, "pid"), "w") as f:
        f.write(str(proc.pid))

    def cleanup(failed=False):
        kill_group(proc.pid)
        proc.wait()
        if failed:
            shutil.copy(os.path.join(spare, "log"), os.path.join(pool, "last-failure.log"))
        shutil.rmtree(spare, ignore_errors=True)

    from jupyter_client.blocking import BlockingKernelClient
    kc = BlockingKernelClient()
    kc.load_connection_file(conn_file)
    # No heartbeat channel: evcxr_jupyter 0.22's heartbeat task ends for good when a peer
    # disconnects ("hb error: Connection reset by peer").
    kc.start_channels(hb=False)
    try:
        deadline = time.time() + 1800
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"evcxr exited ({proc.returncode}); see {pool}/last-failure.log")
            try:
                kc.wait_for_ready(timeout=5)
                break
            except RuntimeError:
                if time.time() > deadline:
                    raise
    except Exception as e:  # noqa: BLE001
        kc.stop_channels()
        log(f"spare failed to start: {e}")
        cleanup(failed=True)
        return 1
    kc.stop_channels()
    marker = os.path.join(ready, f"{key}.{sid}")
    open(marker, "w").close()
    os.unlink(os.path.join(spare, "starting"))
    lock.close()  # the spare counts as ready now

    # Supervise until claimed and released, dead, idle too long, or stale.
    since = time.time()
    fp = fingerprint(home)
    while True:
        time.sleep(0.5)
        if proc.poll() is not None:
            try:
                os.unlink(marker)
            except FileNotFoundError:
                pass  # claimed: the proxy notices the death and exits
            break
        if not os.path.exists(marker):
            # Claimed (or withdrawn by install.sh): wait until the proxy lets go.
            with open(os.path.join(spare, "claim.lock")) as f:
                fcntl.flock(f, fcntl.LOCK_EX)
            break
        if time.time() - since > idle or fingerprint(home) != fp:
            try:
                os.unlink(marker)
            except FileNotFoundError:
                continue  # claimed right now: handled on the next round
            break
    cleanup()
    return 0


# ---------------------------------------------------------------------------------- serve
def claim(home, key):
    """Returns (spare dir, open claim.lock holding a shared lock) or (None, None)."""
    pool, ready = pool_dirs(home)
    markers = []
    for m in os.listdir(ready):
        if m.startswith(key + "."):
            try:
                markers.append((os.stat(os.path.join(ready, m)).st_mtime, m))
            except FileNotFoundError:
                pass
    for _, m in sorted(markers):
        spare = os.path.join(pool, "s." + m[len(key) + 1:])
        try:
            lock = open(os.path.join(spare, "claim.lock"))
        except OSError:
            continue
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            os.unlink(os.path.join(ready, m))
        except FileNotFoundError:
            lock.close()
            continue
        pid = read_int(os.path.join(spare, "pid"))
        if pid and alive_pid(pid):
            return spare, lock
        lock.close()
    return None, None


def serve(home, key, conn_file, launch):
    spare, lock = claim(home, key)
    # Whether we got one or not, make the next kernel find one (detached, lowest priority).
    with open(os.path.join(home, "pool", "refill.log"), "a") as out:
        subprocess.Popen(["nice", "-n", "19", sys.executable, os.path.abspath(__file__), "refill", home, key, launch],
                         stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    if spare is None:
        os.execv(launch, [launch, "--cold", home, conn_file])
    import zmq

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with open(conn_file) as f:
        front = json.load(f)
    with open(os.path.join(spare, "connection.json")) as f:
        back = json.load(f)
    pid = read_int(os.path.join(spare, "pid"))
    # The spare started at the lowest priority (not to slow the kernel that asked for it); it
    # is a user's kernel now. (Raising a priority needs privileges or RLIMIT_NICE; if that is
    # refused it keeps nice 19, which only matters on a busy machine.)
    try:
        os.setpriority(os.PRIO_PGRP, pid, 0)
    except (OSError, TypeError):
        pass
    if front.get("signature_scheme", "hmac-sha256") not in ("hmac-sha256", ""):
        log(f"unsupported signature scheme {front['signature_scheme']}")
        sys.exit(1)

    # The client's ports are bound first: its connections (and iopub subscription) are made
    # while we check the spare; its first requests wait in the sockets meanwhile.
    ctx = zmq.Context()
    f, b = proxy.connect(ctx, front, back)
    alive = lambda: bool(pid) and alive_pid(pid)  # noqa: E731
    if not proxy.handshake(f, b, alive, deadline=time.time() + 30):
        log(f"spare {spare} does not answer; starting a kernel the slow way")
        ctx.destroy(linger=0)  # the client's ports, for the cold kernel to bind
        lock.close()
        os.execv(launch, [launch, "--cold", home, conn_file])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # The spare's launcher set AULA_INTERRUPT_FILE to this for its evcxr (launch.sh --private).
    proxy.forward(f, b, front.get("key", "").encode(), alive, os.path.join(spare, "tmp", "aula-interrupt"))
    ctx.destroy(linger=500)
    return 0


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "refill" and len(sys.argv) == 5:
        return refill(*sys.argv[2:])
    if cmd == "serve" and len(sys.argv) == 6:
        return serve(*sys.argv[2:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
