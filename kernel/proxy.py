#!/usr/bin/env python3
"""The proxy in front of every "Rust · aula" kernel, cold or warm: it forwards the five Jupyter
channels between the client (its connection file, messages signed with its key) and
evcxr_jupyter (unsigned, on 127.0.0.1), and turns Jupyter's interrupt into a stop that keeps the
session's variables.

Why: evcxr 0.22 answers `interrupt_request` by SIGKILLing the process that holds every variable
of the session (`model`, `history`, the generators). aula's long loops (training, feature
extraction, prediction) instead look at a flag file at every batch boundary and stop cleanly
(crates/aula/src/interrupt.rs). So on `interrupt_request` while a cell runs, the proxy
  1. creates the flag file $AULA_INTERRUPT_FILE (the launcher sets it to
     <EVCXR_TMPDIR>/aula-interrupt for evcxr and the process that runs the cells), replies
     `interrupt_reply` itself, and aborts the cells queued behind the running one, as ipykernel
     does (they are held here, one cell at a time goes to evcxr);
  2. falls back to evcxr's kill (forwards the `interrupt_request`) when the cell has not ended
     AULA_INTERRUPT_GRACE seconds later (default 5: arbitrary code, a `loop {}`), or, while an
     aula loop runs (<flag>.loop exists: it will stop at the next batch, however long a batch
     takes here) the grace counts from the loop's end, up to AULA_INTERRUPT_LOOP_GRACE seconds
     after the interrupt (default 60).
The flag is removed when the cell ends, so a late interrupt never stops the next cell. After the
fallback the proxy tells the cell, in Spanish, that its variables are lost; an interrupted
cell's idle status waits 0.3 s so that its last stderr lines (the stop message) come first.

  proxy.py CONNECTION_FILE DIR COMMAND...   (launch.sh, cold kernels) starts COMMAND plus
      `--control_file DIR/aula-connection.json` (evcxr on free local ports), waits until it
      answers, then forwards until it exits; exits with its status.
pool.py's `serve` uses `connect`, `handshake` and `forward` for warm kernels.
"""

import datetime
import hashlib
import hmac
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time

DELIM = b"<IDS|MSG>"


def log(*a):
    print("aula-proxy:", *a, file=sys.stderr, flush=True)


def free_ports(n):
    """Free ports below Linux's ephemeral range (32768-60999), where Jupyter clients pick theirs
    (bind to port 0): a port a client has chosen for a kernel that has not bound it yet (the
    launcher copies the template first) is never given to an evcxr behind a proxy."""
    ports = []
    while len(ports) < n:
        p = random.randrange(20000, 32000)
        if p in ports:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            ports.append(p)
        except OSError:
            pass
        finally:
            s.close()
    return ports


def back_connection(path):
    """Writes a connection file for an evcxr that only the proxy talks to; returns it."""
    ports = free_ports(5)
    conn = {"ip": "127.0.0.1", "transport": "tcp", "key": "", "signature_scheme": "hmac-sha256",
            "shell_port": ports[0], "iopub_port": ports[1], "stdin_port": ports[2],
            "control_port": ports[3], "hb_port": ports[4], "kernel_name": "aula"}
    with open(path, "w") as f:
        json.dump(conn, f)
    return conn


def sign(key, parts):
    if not key:
        return b""
    h = hmac.new(key, digestmod=hashlib.sha256)
    for p in parts:
        h.update(p)
    return h.hexdigest().encode()


def split(frames):
    try:
        i = frames.index(DELIM)
    except ValueError:
        return None
    return frames[:i], frames[i + 1], frames[i + 2:]


def header(msg_type):
    return {"msg_id": secrets.token_hex(8), "msg_type": msg_type, "username": "aula", "session": "aula-proxy",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(), "version": "5.3"}


def msg_type_of(jparts, i=0):
    try:
        return json.loads(jparts[i]).get("msg_type"), json.loads(jparts[i]).get("msg_id")
    except (ValueError, IndexError, AttributeError):
        return None, None


def connect(ctx, front, back):
    """The client's sockets (bound on its ports) and evcxr's (connected)."""
    import zmq

    def faddr(port):
        if front.get("transport", "tcp") == "ipc":
            return f"ipc://{front['ip']}-{front[port]}"
        return f"tcp://{front['ip']}:{front[port]}"

    ident = ("aula-proxy-" + secrets.token_hex(4)).encode()
    b = {"shell": ctx.socket(zmq.DEALER), "stdin": ctx.socket(zmq.DEALER), "control": ctx.socket(zmq.DEALER),
         "iopub": ctx.socket(zmq.SUB)}
    b["shell"].setsockopt(zmq.IDENTITY, ident)  # evcxr routes input_request to this identity on stdin
    b["stdin"].setsockopt(zmq.IDENTITY, ident)
    b["iopub"].setsockopt(zmq.SUBSCRIBE, b"")
    for name, s in b.items():
        s.setsockopt(zmq.LINGER, 1000)
        s.connect(f"tcp://{back['ip']}:{back[name + '_port']}")
    f = {"shell": ctx.socket(zmq.ROUTER), "stdin": ctx.socket(zmq.ROUTER), "control": ctx.socket(zmq.ROUTER),
         "iopub": ctx.socket(zmq.PUB), "hb": ctx.socket(zmq.ROUTER)}
    for name, s in f.items():
        s.setsockopt(zmq.LINGER, 1000)
        s.bind(faddr(name + "_port"))
    return f, b


def handshake(f, b, alive, deadline=None):
    """Sends kernel_info requests of our own until one's iopub status arrives, so that no output
    of the client's requests is lost while our iopub subscription is being set up (the client's
    requests wait in its sockets meanwhile; heartbeats are answered). True when evcxr answered."""
    sent = set()
    replied = False  # evcxr is up: ask often until the subscription works
    last = 0.0
    while deadline is None or time.time() < deadline:
        if not alive():
            return False
        if time.time() - last > (0.1 if replied else 2.0):
            last = time.time()
            h = header("kernel_info_request")
            sent.add(h["msg_id"])
            b["shell"].send_multipart([DELIM, b"", json.dumps(h).encode(), b"{}", b"{}", b"{}"])
        if b["iopub"].poll(20):
            parts = split(b["iopub"].recv_multipart())
            if parts and len(parts[2]) >= 2 and json.loads(parts[2][1] or b"{}").get("msg_id") in sent:
                break
        while b["shell"].poll(0):
            b["shell"].recv_multipart()  # our kernel_info_reply
            replied = True
        while f["hb"].poll(0):
            f["hb"].send_multipart(f["hb"].recv_multipart())
    else:
        return False
    time.sleep(0.05)
    while b["shell"].poll(50):
        b["shell"].recv_multipart()
    while b["iopub"].poll(0):
        b["iopub"].recv_multipart()
    return True


def remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def forward(f, b, fkey, alive, flag):
    """Forwards until evcxr is gone (or lingers after a shutdown); handles interrupts (module doc)."""
    import zmq

    grace = float(os.environ.get("AULA_INTERRUPT_GRACE", "5"))
    loop_grace = float(os.environ.get("AULA_INTERRUPT_LOOP_GRACE", "60"))
    running = None  # msg_id of the execute_request evcxr is running
    running_header = b"{}"  # and its header (the parent of what the proxy says in that cell)
    killed = None  # msg_id of the cell evcxr's kill ended
    queued = []  # (ids, parts) of execute_requests held here until it is done
    interrupted_at = None  # when the running cell was asked to stop
    kill_at = None  # when evcxr's kill comes, unless the cell has ended first
    own = set()  # msg_ids of the interrupt_requests we sent to evcxr (their replies are ours)
    # evcxr forwards a cell's stderr asynchronously and may publish its idle status before the
    # last lines, the stop message among them: an interrupted cell's idle waits a little here.
    stopped = set()  # msg_ids of interrupted cells whose idle status has not gone out yet
    held_idle = []  # (when to send, ids, jparts)
    shutting_down = False

    def to_front(sock, ids, jparts):
        sock.send_multipart(ids + [DELIM, sign(fkey, jparts)] + jparts)

    def reply(sock, ids, parent, msg_type, content):
        to_front(sock, ids, [json.dumps(header(msg_type)).encode(), parent, b"{}", json.dumps(content).encode()])

    def status(parent, state):
        jparts = [json.dumps(header("status")).encode(), parent, b"{}",
                  json.dumps({"execution_state": state}).encode()]
        f["iopub"].send_multipart([b"kernel.aula-proxy.status", DELIM, sign(fkey, jparts)] + jparts)

    def run(ids, jparts):
        nonlocal running, running_header
        _, running = msg_type_of(jparts)
        running_header = jparts[0]
        remove(flag)  # a stale flag never stops this cell
        b["shell"].send_multipart(ids + [DELIM, b""] + jparts)

    def from_client(name, frames):
        nonlocal interrupted_at, kill_at
        parts = split(frames)
        if parts is None:
            return
        ids, sig, jparts = parts
        if fkey and not hmac.compare_digest(sign(fkey, jparts), sig):
            log("dropping a message with a bad signature")
            return
        msg_type, _ = msg_type_of(jparts)
        if name == "shell" and msg_type == "execute_request":
            if running is None:
                run(ids, jparts)
            else:
                queued.append((ids, jparts))
        elif name == "control" and msg_type == "interrupt_request":
            if running is not None and interrupted_at is None:
                with open(flag, "w"):
                    pass
                interrupted_at = time.time()
                kill_at = interrupted_at + grace
                stopped.add(running)
                log(f"interrupt: flag raised for {running}; {len(queued)} queued cell(s) aborted")
                # As ipykernel: the cells queued behind an interrupted one do not run.
                for qids, qparts in queued:
                    status(qparts[0], "busy")
                    reply(f["shell"], qids, qparts[0], "execute_reply", {"status": "aborted"})
                    status(qparts[0], "idle")
                queued.clear()
            reply(f["control"], ids, jparts[0], "interrupt_reply", {"status": "ok"})
        else:
            b[name].send_multipart(ids + [DELIM, b""] + jparts)

    def from_evcxr(name, frames):
        nonlocal running, interrupted_at, kill_at, shutting_down, killed
        parts = split(frames)
        if parts is None:
            return
        ids, _sig, jparts = parts
        msg_type, _ = msg_type_of(jparts)
        if name == "control" and msg_type == "interrupt_reply" and msg_type_of(jparts, 1)[1] in own:
            return
        if name == "control" and msg_type == "shutdown_reply":
            shutting_down = True
        parent = msg_type_of(jparts, 1)[1]
        if name == "iopub" and msg_type == "status" and parent in stopped and b'"idle"' in jparts[3]:
            stopped.discard(parent)
            held_idle.append((time.time() + 0.3, ids, jparts))
            return
        to_front(f[name], ids, jparts)
        if name == "shell" and msg_type == "execute_reply" and parent == running:
            if killed == running:  # say what happened, in the student's language
                stream = {"name": "stderr", "text": (
                    f"aula: la celda no se detuvo en {grace:g} s tras la interrupción (solo los bucles de aula "
                    "—entrenamiento, extracción de características, predicción— se detienen limpiamente), así que "
                    "el kernel reinició el proceso que ejecuta las celdas: las variables se han perdido; vuelve a "
                    "ejecutar las celdas anteriores.\n")}
                jp = [json.dumps(header("stream")).encode(), running_header, b"{}", json.dumps(stream).encode()]
                f["iopub"].send_multipart([b"kernel.aula-proxy.stream", DELIM, sign(fkey, jp)] + jp)
            running, interrupted_at, kill_at, killed = None, None, None, None
            remove(flag)
            remove(flag + ".loop")  # (left by a loop whose process was killed)
            if queued:
                run(*queued.pop(0))

    routes = {f[n]: (lambda m, n=n: from_client(n, m)) for n in ("shell", "stdin", "control")}
    routes.update({b[n]: (lambda m, n=n: from_evcxr(n, m)) for n in ("shell", "stdin", "control", "iopub")})
    # The heartbeat is answered here while evcxr lives (evcxr 0.22's own ends with the first
    # peer that disconnects).
    routes[f["hb"]] = lambda m: f["hb"].send_multipart(m)
    poller = zmq.Poller()
    for s in routes:
        poller.register(s, zmq.POLLIN)
    last_check = time.time()
    done_at = None
    while True:
        for s, _ in poller.poll(100):
            routes[s](s.recv_multipart())
        now = time.time()
        while held_idle and held_idle[0][0] <= now:
            to_front(f["iopub"], *held_idle.pop(0)[1:])
        if kill_at is not None:
            # While aula's loop runs the grace counts from its end: the loop stops at the next
            # batch boundary, the cell then has `grace` seconds to return.
            if os.path.exists(flag + ".loop") and now - interrupted_at < loop_grace:
                kill_at = now + grace
            if now > kill_at:
                log(f"the cell did not stop within {now - interrupted_at:.1f} s: evcxr's interrupt (it kills the process that runs the cells)")
                h = header("interrupt_request")
                own.add(h["msg_id"])
                b["control"].send_multipart([DELIM, b"", json.dumps(h).encode(), b"{}", b"{}", b"{}"])
                kill_at = None  # once: the cell's reply follows
                killed = running
        if now - last_check > 0.5:
            last_check = now
            if not alive():
                if done_at is None:
                    done_at = now  # flush what is left, then go
                elif now - done_at > 0.5:
                    return
            elif shutting_down:
                if done_at is None:
                    done_at = now
                elif now - done_at > 5:
                    return  # evcxr replied but lingers: whoever started it kills it


def main():
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    conn_file, private, command = sys.argv[1], sys.argv[2], sys.argv[3:]
    import zmq

    with open(conn_file) as fh:
        front = json.load(fh)
    if front.get("signature_scheme", "hmac-sha256") not in ("hmac-sha256", ""):
        log(f"unsupported signature scheme {front['signature_scheme']}")
        return 1
    back_file = os.path.join(private, "aula-connection.json")
    back = back_connection(back_file)

    def die_with_parent():  # evcxr goes if this proxy is killed alone
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    # close_fds=False: evcxr inherits the launcher's lock on fd 9 (the private copy's reaper).
    child = subprocess.Popen(command + [back_file], close_fds=False, preexec_fn=die_with_parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: (child.terminate(), sys.exit(0)))
    ctx = zmq.Context()
    f, b = connect(ctx, front, back)
    alive = lambda: child.poll() is None  # noqa: E731
    if handshake(f, b, alive):
        forward(f, b, front.get("key", "").encode(), alive, os.environ["AULA_INTERRUPT_FILE"])
    ctx.destroy(linger=500)
    try:
        rc = child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        rc = child.wait()
    return rc if rc >= 0 else 128 - rc  # killed by a signal: as a shell says it


if __name__ == "__main__":
    sys.exit(main())
