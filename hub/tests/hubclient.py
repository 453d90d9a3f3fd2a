"""A hub and its students, driven the way a class meets them: the hub's login form and REST
API, each student's own Jupyter server API and kernel websocket. Used by load.py and
faults.py (run as root: they create Unix users and read the students' processes).
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import psutil
import requests
import websocket

HERE = os.path.dirname(os.path.abspath(__file__))
HUB_DIR = os.path.dirname(HERE)
sys.path.insert(0, HUB_DIR)
import classlist  # noqa: E402

PREFIX = os.environ.get("AULA_HUB_PREFIX", "/opt/aula-hub")


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


class Hub:
    """A JupyterHub of the shared install (hub/setup.sh) with its own state folder, class list
    and port; stopped (with every server it started) by stop(), also on SIGTERM/SIGINT."""

    def __init__(self, users, admin, port, state=None, auth="firstuse"):
        self.port, self.users, self.admin = port, users, admin
        self.url = f"http://127.0.0.1:{port}"
        self.state = state or tempfile.mkdtemp(prefix=f"state-test-{port}-", dir=PREFIX)
        os.chmod(self.state, 0o700)
        self.classlist = os.path.join(self.state, "classlist.txt")
        with open(self.classlist, "w") as f:
            f.write(f"{admin} admin\n" + "".join(f"{u}\n" for u in users))
        all_users, _ = classlist.read(self.classlist)
        classlist.create_users(all_users)
        self.auth = auth
        self.proc = None

    def start(self, timeout=120, **env_extra):
        env = dict(os.environ, AULA_HUB_PREFIX=PREFIX, AULA_HUB_STATE=self.state, AULA_HUB_CLASSLIST=self.classlist,
                   AULA_HUB_PORT=str(self.port), AULA_HUB_IP="127.0.0.1", AULA_HUB_AUTH=self.auth, **env_extra)
        self.log_path = os.path.join(self.state, "hub.log")
        # Through hub/run.sh (`make hub`), which execs JupyterHub: signals reach the hub itself.
        self.proc = subprocess.Popen(
            ["bash", f"{PREFIX}/src/hub/run.sh"],
            cwd=self.state, env=env, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT)
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the hub exited ({self.proc.returncode}); see {self.log_path}:\n{self.tail()}")
            try:
                if requests.get(f"{self.url}/hub/api/", timeout=2).ok:
                    log(f"hub: up on {self.url} after {time.time() - t0:.1f} s (state {self.state})")
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the hub did not answer within {timeout} s; see {self.log_path}")

    def tail(self, n=30):
        try:
            return "".join(open(self.log_path, errors="replace").readlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout=120):
        """SIGTERM: JupyterHub stops every student's server (cleanup_servers) and the proxy."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log("hub: did not stop in time; SIGKILL")
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def remove_state(self):
        """The test hub's state folder (database, passwords, log), once it passed."""
        import shutil
        shutil.rmtree(self.state, ignore_errors=True)

    def leftovers(self):
        """Processes still running as the hub's users (there must be none once it stopped)."""
        import pwd
        uids = {pwd.getpwnam(u).pw_uid for u in self.users + [self.admin]}
        return [p for p in psutil.process_iter(["uids", "status"])
                if p.info["uids"] and p.info["uids"].real in uids and p.info["status"] != psutil.STATUS_ZOMBIE]

    def kill_leftovers(self):
        procs = self.leftovers()
        for p in procs:
            try:
                p.kill()
            except psutil.Error:
                pass
        return procs


class Student:
    """One student: logs in through the form, gets an API token, starts their server, runs
    cells in their kernel over the Jupyter server's websocket."""

    def __init__(self, hub, name, password=None):
        self.hub, self.name = hub, name
        self.password = password or f"clave-{name}-2026"
        self.http = requests.Session()
        self.token = None

    # --- the hub ---------------------------------------------------------------------------
    def login(self):
        """True when the hub accepted the name and password (a redirect away from the form)."""
        r = self.http.get(f"{self.hub.url}/hub/login", timeout=30)
        r.raise_for_status()
        xsrf = [c.value for c in self.http.cookies if c.name == "_xsrf"][-1]
        r = self.http.post(f"{self.hub.url}/hub/login?next=", timeout=60, allow_redirects=False,
                           data={"username": self.name, "password": self.password, "_xsrf": xsrf})
        return r.status_code in (302, 303) and "/hub/login" not in r.headers.get("Location", "/hub/login")

    def get_token(self):
        """An API token for this student, asked for with the login cookie (as JupyterLab's
        token page does)."""
        # JupyterHub ties the XSRF token to the login session: take the one it sets for it.
        self.http.get(f"{self.hub.url}/hub/token", timeout=30).raise_for_status()
        xsrf = [c.value for c in self.http.cookies if c.name == "_xsrf"][-1]
        r = self.http.post(f"{self.hub.url}/hub/api/users/{self.name}/tokens", timeout=30,
                           headers={"X-XSRFToken": xsrf, "Referer": f"{self.hub.url}/hub/token"},
                           json={"note": "aula hub test", "expires_in": 7200})
        if r.status_code != 201:
            raise RuntimeError(f"{self.name}: token request answered {r.status_code}: {r.text[:300]}")
        self.token = r.json()["token"]
        self.auth = {"Authorization": f"token {self.token}"}
        return self.token

    def api(self, method, path, **kw):
        r = requests.request(method, f"{self.hub.url}/hub/api{path}", headers=self.auth, timeout=60, **kw)
        return r

    def user(self):
        r = self.api("GET", f"/users/{self.name}")
        r.raise_for_status()
        return r.json()

    def server_ready(self):
        s = self.user().get("servers", {}).get("")
        return bool(s and s.get("ready"))

    def start_server(self, timeout=900):
        """Seconds from the request to a server that answers."""
        t0 = time.time()
        r = self.api("POST", f"/users/{self.name}/server")
        if r.status_code not in (201, 202, 400):  # 400: already running
            raise RuntimeError(f"{self.name}: start server answered {r.status_code}: {r.text[:300]}")
        while time.time() - t0 < timeout:
            if self.server_ready():
                return time.time() - t0
            time.sleep(0.5)
        raise RuntimeError(f"{self.name}: server not ready within {timeout} s")

    def stop_server(self, timeout=120):
        self.api("DELETE", f"/users/{self.name}/server")
        t0 = time.time()
        while time.time() - t0 < timeout:
            if not self.user().get("servers", {}).get(""):
                return
            time.sleep(0.5)
        raise RuntimeError(f"{self.name}: server still there {timeout} s after DELETE")

    # --- their Jupyter server ----------------------------------------------------------------
    def jupyter(self, method, path, **kw):
        return requests.request(method, f"{self.hub.url}/user/{self.name}/api{path}", headers=self.auth,
                                timeout=kw.pop("timeout", 120), **kw)

    def open_notebook(self, path):
        """A kernel for notebook `path` (relative to the home), as JupyterLab opens one: a
        session whose kernel runs in the notebook's folder. Returns a Kernel, ready."""
        t0 = time.time()
        r = self.jupyter("POST", "/sessions", json={"path": path, "type": "notebook", "name": os.path.basename(path),
                                                    "kernel": {"name": "aula"}}, timeout=900)
        if r.status_code != 201:
            raise RuntimeError(f"{self.name}: POST /api/sessions answered {r.status_code}: {r.text[:300]}")
        session = r.json()
        k = Kernel(self, session["kernel"]["id"], session["id"])
        k.wait_ready(t0)
        return k

    def notebook(self, path):
        r = self.jupyter("GET", f"/contents/{path}")
        r.raise_for_status()
        return r.json()["content"]

    def save_notebook(self, path, nb):
        r = self.jupyter("PUT", f"/contents/{path}", json={"type": "notebook", "format": "json", "content": nb})
        r.raise_for_status()


class CellError(RuntimeError):
    pass


class Kernel:
    """A kernel of a student's server, over /api/kernels/<id>/channels (the websocket
    JupyterLab uses)."""

    def __init__(self, student, kernel_id, session_id):
        self.student, self.id, self.session_id = student, kernel_id, session_id
        self.session = uuid.uuid4().hex
        base = student.hub.url.replace("http://", "ws://")
        self.ws = websocket.create_connection(
            f"{base}/user/{student.name}/api/kernels/{kernel_id}/channels?session_id={self.session}",
            # The server answers the upgrade once the kernel process has started (a cold
            # aula kernel: tens of seconds).
            header=[f"Authorization: token {student.token}"], timeout=900)
        self.ready_s = None

    def _send(self, channel, msg_type, content):
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": self.student.name, "session": self.session,
                       "msg_type": msg_type, "version": "5.3", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "parent_header": {}, "metadata": {}, "content": content, "channel": channel}))
        return msg_id

    def _recv(self, deadline):
        self.ws.settimeout(max(0.1, min(5, deadline - time.time())))
        try:
            return json.loads(self.ws.recv())
        except websocket.WebSocketTimeoutException:
            return None

    def wait_ready(self, t0, timeout=900):
        """Until the kernel answers kernel_info (a cold aula kernel answers nothing before its
        prelude ran); ready_s counts from t0 (the session request)."""
        deadline = t0 + timeout
        while time.time() < deadline:
            msg_id = self._send("shell", "kernel_info_request", {})
            until = time.time() + 3
            while time.time() < min(until, deadline):
                m = self._recv(until)
                if m and m.get("msg_type") == "kernel_info_reply" and m["parent_header"].get("msg_id") == msg_id:
                    self.ready_s = time.time() - t0
                    # Drain what the other requests produce.
                    return self.ready_s
        raise RuntimeError(f"{self.student.name}: kernel not ready within {timeout} s")

    def run(self, code, timeout=1800):
        """Runs one cell; returns (seconds, outputs text). Raises CellError on an error
        output, an error reply, or a Rust panic / returned error on stderr."""
        t0 = time.time()
        msg_id = self._send("shell", "execute_request", {"code": code, "silent": False, "store_history": True,
                                                         "user_expressions": {}, "allow_stdin": False,
                                                         "stop_on_error": True})
        deadline = t0 + timeout
        reply, idle, texts, stderr, errors = None, False, [], [], []

        def handle(t, c):
            if t == "stream":
                (stderr if c.get("name") == "stderr" else texts).append(c["text"])
            elif t in ("execute_result", "display_data"):
                texts.append(c["data"].get("text/plain", ""))
            elif t == "error":
                errors.append(f"{c.get('ename')}: {c.get('evalue')}\n" + "\n".join(c.get("traceback", [])))

        while not (reply and idle):
            if time.time() > deadline:
                raise CellError(f"{self.student.name}: cell still running after {timeout} s:\n{code[:200]}")
            m = self._recv(deadline)
            # (A dead kernel's status has no parent: the server sends it.)
            if not m or (m["parent_header"].get("msg_id") != msg_id and m["msg_type"] != "status"):
                continue
            t, c = m["msg_type"], m["content"]
            if t == "status" and c.get("execution_state") in ("restarting", "dead"):
                raise CellError(f"{self.student.name}: the kernel died ({c['execution_state']}) running:\n{code[:200]}")
            if m["parent_header"].get("msg_id") != msg_id:
                continue
            if t == "execute_reply":
                reply = c
            elif t == "status" and c.get("execution_state") == "idle":
                idle = True
            else:
                handle(t, c)
        # Outputs still in flight after idle and the reply (evcxr forwards the cell process's
        # output from another thread; seen once: a cell's result after its idle): 0.5 s more
        # after the last one, 2 s at most, as aula-runner lingers.
        done = time.time()
        cap, until = done + 2, done + 0.5
        while time.time() < until:
            m = self._recv(until)
            if m and m["parent_header"].get("msg_id") == msg_id and m["msg_type"] not in ("status", "execute_reply"):
                handle(m["msg_type"], m["content"])
                until = min(cap, time.time() + 0.5)
        err = "".join(stderr)
        if errors or reply.get("status") != "ok" or " panicked at " in err or err.lstrip().startswith("Error:"):
            raise CellError(f"{self.student.name}: cell failed:\n{code[:200]}\n--\n" + "\n".join(errors) + err[-2000:])
        return done - t0, "".join(texts)

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass
        self.student.jupyter("DELETE", f"/sessions/{self.session_id}")


def class_cells(path):
    """The code cells of notebook `path` that class mode runs (not tagged no-ejecutar or
    skip-execution), as (index, source)."""
    nb = json.load(open(path))
    out = []
    for i, c in enumerate(nb["cells"]):
        tags = set(c.get("metadata", {}).get("tags", []))
        if c["cell_type"] == "code" and not tags & {"no-ejecutar", "skip-execution"}:
            out.append((i, "".join(c["source"])))
    return out


class RssSampler(threading.Thread):
    """Every second, for each user: the RSS of all their processes together, and of each
    kernel (an evcxr_jupyter process with its children: rust-analyzer in process, the cell
    process, rustc while compiling). Keeps the peaks."""

    def __init__(self, users, interval=1.0):
        super().__init__(daemon=True)
        import pwd
        self.uids = {pwd.getpwnam(u).pw_uid: u for u in users}
        self.peak_total = {u: 0 for u in users}
        self.peak_kernel = {u: 0 for u in users}
        self.interval = interval
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(self.interval):
            total = {u: 0 for u in self.peak_total}
            for p in psutil.process_iter(["uids", "name", "memory_info"]):
                try:
                    u = self.uids.get(p.info["uids"].real)
                    if u is None or p.info["memory_info"] is None:
                        continue
                    total[u] += p.info["memory_info"].rss
                    if p.info["name"] == "evcxr_jupyter":
                        tree = p.info["memory_info"].rss + sum(c.memory_info().rss for c in p.children(recursive=True))
                        self.peak_kernel[u] = max(self.peak_kernel[u], tree)
                except (psutil.Error, AttributeError):
                    continue
            for u, v in total.items():
                self.peak_total[u] = max(self.peak_total[u], v)

    def stop(self):
        self.stopped.set()
        self.join()
