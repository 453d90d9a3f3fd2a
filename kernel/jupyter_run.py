"""Drive a Jupyter kernel over the real protocol (jupyter_client): start it, run cells, time them.

Used by kernel/build-template.py (builds the prebuilt template through evcxr itself),
scripts/bench-kernel.py and kernel/tests/. Only needs `jupyter_client`.
"""

from __future__ import annotations

import json
import os
import queue
import tempfile
import time
from dataclasses import dataclass, field

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager


@dataclass
class Cell:
    code: str
    seconds: float
    status: str  # "ok" | "error" | "timeout"
    text: str = ""  # stream output and text/plain results, in order
    mimes: dict = field(default_factory=dict)  # mime type -> data of display/execute results
    error: str = ""  # ename: evalue + traceback of an error reply or error output

    def all_text(self) -> str:
        """Streams, results and every textual MIME payload, for output checks."""
        return self.text + "".join(v for v in self.mimes.values() if isinstance(v, str))


class Kernel:
    """One kernel. Either from an installed kernelspec (`name`) or from an argv (`argv`, with
    "{connection_file}"), which is written into a private kernelspec directory."""

    def __init__(self, name: str | None = None, argv: list[str] | None = None, env: dict | None = None):
        self._spec_dir = None
        if argv is not None:
            self._spec_dir = tempfile.TemporaryDirectory(prefix="aula-kernelspec-")
            kdir = os.path.join(self._spec_dir.name, "kernels", "adhoc")
            os.makedirs(kdir)
            with open(os.path.join(kdir, "kernel.json"), "w") as f:
                json.dump({"argv": argv, "display_name": "adhoc", "language": "rust",
                           "interrupt_mode": "message", "env": env or {}}, f)
            ksm = KernelSpecManager(kernel_dirs=[os.path.join(self._spec_dir.name, "kernels")])
            self.km = KernelManager(kernel_name="adhoc", kernel_spec_manager=ksm)
        else:
            self.km = KernelManager(kernel_name=name)
        self.kc = None
        self.ready_s = None

    def start(self, timeout: float = 60.0, env: dict | None = None) -> float:
        """Starts the kernel (with `env` instead of ours, if given); returns seconds from start
        to its first kernel_info_reply."""
        t0 = time.perf_counter()
        if env is not None:
            self.km.start_kernel(env=env)
        else:
            self.km.start_kernel()
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=timeout)
        self.ready_s = time.perf_counter() - t0
        return self.ready_s

    def pid(self) -> int | None:
        prov = getattr(self.km, "provisioner", None)
        proc = getattr(prov, "process", None)
        return proc.pid if proc is not None else None

    def run(self, code: str, timeout: float = 600.0) -> Cell:
        """Executes one cell; seconds from execute_request sent to the kernel back to idle."""
        text, mimes, errors = [], {}, []

        def hook(msg):
            t, c = msg["header"]["msg_type"], msg["content"]
            if t == "stream":
                text.append(c["text"])
            elif t in ("execute_result", "display_data"):
                data = c.get("data", {})
                mimes.update(data)
                if "text/plain" in data:
                    text.append(data["text/plain"] + "\n")
            elif t == "error":
                errors.append(f"{c.get('ename')}: {c.get('evalue')}\n" + "\n".join(c.get("traceback", [])))

        t0 = time.perf_counter()
        try:
            reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook, store_history=True)
        except (TimeoutError, queue.Empty):
            return Cell(code, time.perf_counter() - t0, "timeout", "".join(text), mimes, "\n".join(errors))
        seconds = time.perf_counter() - t0
        content = reply["content"]
        if content.get("status") == "error" and not errors:
            errors.append(f"{content.get('ename')}: {content.get('evalue')}\n" + "\n".join(content.get("traceback", [])))
        return Cell(code, seconds, content.get("status", "?"), "".join(text), mimes, "\n".join(errors))

    def shutdown(self, timeout: float = 20.0) -> None:
        if self.kc is not None:
            self.kc.stop_channels()
        if self.km.has_kernel:
            self.km.shutdown_kernel(now=False)
        # shutdown_kernel waits (shutdown_wait_time) and kills the kernel if needed.
        if self._spec_dir is not None:
            self._spec_dir.cleanup()
