#!/usr/bin/env python3
"""The lesson as a student meets it: JupyterLab in a real (headless) Chromium.

    python kernel/tests/browser.py OUT_DIR      (make test; the Jupyter venv's python)

1. Starts JupyterLab from the project's venv on a free loopback port, over a copy of the
   notebooks (a student's autosave must not touch the repository), with the "Rust · aula"
   kernel; AULA_ASSETS points at the repository's assets/ so the recorded runs load.
2. Notebook 01: runs its cells in the browser and checks in the DOM that the conv base's
   summary table (HTML) and an image output are rendered.
3. Notebook 03: "Run All" (JupyterLab ignores the no-ejecutar / skip-execution tags), then
   checks that each guarded cell answered with the Spanish message, every later cell ran
   without error, and assets/rendered/ is unchanged.
Screenshots go to OUT_DIR/browser/. Every server and browser it starts is stopped.
Needs Debian's chromium and chromium-driver (make browser-deps) and selenium (Jupyter venv).
"""
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

REPO = Path(__file__).resolve().parents[2]
OUT = Path(sys.argv[1]).resolve() / "browser"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TIMEOUT = float(os.environ.get("AULA_BROWSER_TIMEOUT", "900"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_digest(path):
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + f.read_bytes())
    return h.hexdigest()


def wait_for(what, check, timeout=TIMEOUT, every=1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"browser test: timed out after {timeout:.0f} s waiting for {what}")


class Lab:
    """JupyterLab on 127.0.0.1 over `root`, stopped with its kernels on exit."""

    def __init__(self, root, log):
        self.port, self.token = free_port(), os.urandom(16).hex()
        env = dict(os.environ, AULA_ASSETS=str(REPO / "assets"), AULA_KERNEL_POOL="0", AULA_OUT=str(OUT / "metrics"))
        jupyter = Path(sys.executable).parent / "jupyter"
        self.proc = subprocess.Popen(
            [str(jupyter), "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
             f"--port={self.port}", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
             "--ServerApp.open_browser=False"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for("JupyterLab to listen", self.listening, timeout=120, every=0.5)

    def listening(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}; see its log")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def url(self, notebook):
        return f"http://127.0.0.1:{self.port}/lab/tree/{notebook}?token={self.token}"

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server shuts its kernels down
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={tempfile.mkdtemp(prefix='aula-chromium-')}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


# JupyterLab's own commands, through the application object it exposes with
# --LabApp.expose_app_in_browser (the menu items a student clicks run the same commands).
# Every script first checks that the notebook in front is the one asked for (arguments[0]),
# loaded: until JupyterLab has made it the current widget, the page may still show another
# notebook or this one's stored outputs (the test once read those and failed).
CURRENT = """
const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
if (!w || !w.context || !w.context.isReady || w.context.path.split('/').pop() !== arguments[0]) return null;"""
KERNEL_IDLE = CURRENT + """
const k = w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
return k ? k.status : null;"""
CELLS = CURRENT + """
return w.content.widgets.map(c => c.model.type === 'code'
  ? {n: c.model.executionCount, outputs: c.model.outputs.toJSON()} : null);"""
DIRTY = CURRENT + "return w.context.model.dirty ? 'dirty' : 'saved';"
# Shuts the notebook's kernel down without JupyterLab's confirmation dialog.
SHUTDOWN = CURRENT + "w.sessionContext.shutdown(); return 'ok';"


def run(driver, name, command):
    # Not awaited: Run All's promise resolves only when the last cell ends.
    assert driver.execute_script(CURRENT + "return 'ok';", name) == "ok", f"{name} is not the current notebook"
    driver.execute_script(f"window.jupyterapp.commands.execute('{command}'); return null;")


def open_notebook(driver, lab, name):
    # `reset`: a fresh workspace, so that only this notebook opens (not the previous one's tab).
    driver.get(lab.url(name) + "&reset")
    wait_for(f"{name}'s kernel to start", lambda: driver.execute_script(KERNEL_IDLE, name) == "idle", every=2)


def close_notebook(driver, name):
    """Saves it (no "unsaved changes" dialog later) and shuts its kernel down."""
    run(driver, name, "docmanager:save")
    wait_for(f"{name} to be saved", lambda: driver.execute_script(DIRTY, name) == "saved", timeout=60)
    driver.execute_script(SHUTDOWN, name)
    wait_for(f"{name}'s kernel to stop", lambda: driver.execute_script(KERNEL_IDLE, name) in (None, "dead"), timeout=60)


def run_all_and_wait(driver, name):
    # The notebooks carry stored outputs and execution counts: clear them first (a test
    # harness's step, not the student's), so that a count means "ran in this session".
    run(driver, name, "notebook:clear-all-cell-outputs")
    def cleared():
        cells = driver.execute_script(CELLS, name)
        return cells is not None and not any(c and (c["n"] or c["outputs"]) for c in cells)
    wait_for("the outputs to clear", cleared, timeout=30)
    run(driver, name, "notebook:run-all-cells")
    idle_polls = []
    def done():
        cells = driver.execute_script(CELLS, name)
        if cells is None:
            raise RuntimeError(f"{name} stopped being the current notebook during Run All")
        cells = [c for c in cells if c is not None]
        # Idle twice in a row with every code cell counted: the kernel is idle between cells too.
        idle_polls.append(driver.execute_script(KERNEL_IDLE, name) == "idle" and all(c["n"] for c in cells))
        return cells if idle_polls[-2:] == [True, True] else None
    return wait_for(f"every cell of {name} to run", done, every=2)


def text_of(outputs):
    parts = []
    for o in outputs:
        t = o.get("text") or o.get("data", {}).get("text/plain") or ""
        parts.append("".join(t) if isinstance(t, list) else t)
    return "".join(parts)


def main():
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not Path(tool).exists():
            sys.exit(f"browser test: {tool} is missing; install Debian's chromium and chromium-driver "
                     "(make browser-deps)")
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="aula-browser-"))
    shutil.copytree(REPO / "notebooks", work / "notebooks", ignore=shutil.ignore_patterns(".*", "out"))
    rendered_before = tree_digest(REPO / "assets" / "rendered")
    tags = {nb.name: [("no-ejecutar" in c.get("metadata", {}).get("tags", [])) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
            for nb in (REPO / "notebooks").glob("*.ipynb")}
    log = open(OUT / "jupyterlab.log", "w")
    lab, driver = Lab(work / "notebooks", log), None
    t0 = time.time()
    try:
        driver = browser()
        first = "01_extraccion_de_caracteristicas.ipynb"
        open_notebook(driver, lab, first)
        run_all_and_wait(driver, first)
        driver.save_screenshot(str(OUT / "01.png"))
        tables = driver.execute_script("return document.querySelectorAll('.jp-OutputArea-output table').length")
        images = driver.execute_script("return document.querySelectorAll('.jp-OutputArea-output img').length")
        assert tables >= 1, "notebook 01: no HTML table (the summary) rendered in the page"
        assert images >= 1, "notebook 01: no image output rendered in the page"
        print(f"  {first}: every cell ran in JupyterLab; {tables} tables, {images} images in the DOM")
        close_notebook(driver, first)

        third = "03_ajuste_fino.ipynb"
        open_notebook(driver, lab, third)
        cells = [c for c in run_all_and_wait(driver, third) if c is not None]
        driver.save_screenshot(str(OUT / "03.png"))
        first_guard = tags[third].index(True)
        driver.execute_script(f"document.querySelectorAll('.jp-CodeCell')[{first_guard}].scrollIntoView()")
        driver.save_screenshot(str(OUT / "03-guarded-cell.png"))
        errors = [o for c in cells for o in c["outputs"] if o["output_type"] == "error"]
        assert not errors, f"notebook 03 under Run All: error outputs {errors}"
        guarded = [c for c, tagged in zip(cells, tags[third]) if tagged]
        assert guarded, "notebook 03 has no no-ejecutar cell"
        for c in guarded:
            out = text_of(c["outputs"])
            assert "no ejecutar en clase" in out and "Epoch 1/" not in out, f"a guarded cell did not answer as expected:\n{out}"
        print(f"  {third}: Run All ran {len(cells)} cells; {len(guarded)} guarded cells answered in Spanish")
        close_notebook(driver, third)
    except Exception:
        if driver:
            driver.save_screenshot(str(OUT / "failure.png"))
        raise
    finally:
        if driver:
            driver.quit()
        lab.stop()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    assert tree_digest(REPO / "assets" / "rendered") == rendered_before, "assets/rendered/ changed"
    print(f"browser test: ok ({time.time() - t0:.0f} s); screenshots in {OUT}")


if __name__ == "__main__":
    main()
