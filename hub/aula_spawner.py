"""The spawner of aula's hub: JupyterHub's LocalProcessSpawner (each student's server runs
as their own Unix user), plus a memory limit per student and a clean stop.

LocalProcessSpawner ignores `mem_limit` (it only passes it on as MEM_LIMIT). Here each
student's server starts inside its own memory cgroup (v1 `memory.limit_in_bytes`, or v2
`memory.max`), which every kernel and compiler it starts inherits: a student who allocates
too much is OOM-killed alone. Stopping the server kills everything left in the cgroup
(warm kernels of the pool, a cell's child processes), not only the server's process.
"""
import os
import signal
import time

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Integer, Unicode

V2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")


class AulaSpawner(LocalProcessSpawner):
    cgroup_parent = Unicode(
        "/sys/fs/cgroup/aula-hub" if V2 else "/sys/fs/cgroup/memory/aula-hub",
        config=True,
        help="The cgroup under which each student's server gets its own (one per hub instance).",
    ).tag(config=True)

    kernel_pool = Integer(
        0, help="Warm kernels kept per student (AULA_KERNEL_POOL; jupyterhub_config.py sizes it)."
    ).tag(config=True)

    def _cgroup(self):
        return os.path.join(self.cgroup_parent, self.user.name)

    def _make_cgroup(self):
        """The student's cgroup with the memory limit; None (logged) where cgroups are not writable."""
        path = self._cgroup()
        try:
            os.makedirs(path, exist_ok=True)
            if self.mem_limit:
                if V2:
                    with open(os.path.join(self.cgroup_parent, "cgroup.subtree_control"), "w") as f:
                        f.write("+memory")
                    limit_file = os.path.join(path, "memory.max")
                else:
                    limit_file = os.path.join(path, "memory.limit_in_bytes")
                with open(limit_file, "w") as f:
                    f.write(str(int(self.mem_limit)))
            return path
        except OSError as e:
            self.log.warning("aula: no memory cgroup for %s (%s): the memory limit is NOT enforced", self.user.name, e)
            return None

    def make_preexec_fn(self, name):
        demote = super().make_preexec_fn(name)
        procs = os.path.join(self._cgroup_path, "cgroup.procs") if self._cgroup_path else None

        def preexec():
            # In the child, before it becomes the student: join the cgroup (root may).
            if procs:
                with open(procs, "w") as f:
                    f.write(str(os.getpid()))
            demote()

        return preexec

    async def start(self):
        self._kill_cgroup()   # leftovers of a server that died (killed, OOM)
        self._cgroup_path = self._make_cgroup()
        return await super().start()

    async def stop(self, now=False):
        await super().stop(now=now)
        self._kill_cgroup()

    def _pids(self):
        try:
            with open(os.path.join(self._cgroup(), "cgroup.procs")) as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []

    def _kill_cgroup(self):
        """SIGKILL whatever is left in the student's cgroup (a pool's warm kernel, a cell's children)."""
        for _ in range(50):
            pids = self._pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        else:
            self.log.warning("aula: processes left in %s: %s", self._cgroup(), self._pids())
        try:
            os.rmdir(self._cgroup())
        except OSError:
            pass

    def get_env(self):
        env = super().get_env()
        # jupyterhub_config.py sizes the warm-kernel pool from the measured kernel RSS.
        env["AULA_KERNEL_POOL"] = str(self.kernel_pool)
        env["AULA_KERNEL_POOL_MAX"] = "2"
        return env

    _cgroup_path = None
