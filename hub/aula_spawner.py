"""The spawner of aula's hub: JupyterHub's LocalProcessSpawner (each student's server runs
as their own Unix user), plus a memory limit and a fair CPU share per student, and a clean
stop.

LocalProcessSpawner ignores `mem_limit` and `cpu_limit` (it only passes them on as
MEM_LIMIT / CPU_LIMIT). Here each student's server starts inside cgroups of its own, which
every kernel and compiler it starts inherits:
  - memory (v1 `memory.limit_in_bytes`, v2 `memory.max`): a student who allocates too much
    is OOM-killed alone;
  - cpu: every student the same weight, so a student with three kernels does not get three
    times the CPU of one with one, and nice levels (the warm-kernel pool starts spares at
    nice 19) only matter among a student's own processes; `cpu_limit` (cores) caps it;
  - cpuacct (v1; v2's cpu.stat): the student's CPU time, which `make hub-load` reports.
Stopping the server kills everything left in its cgroup (warm kernels of the pool, a cell's
child processes), not only the server's process.
"""
import os
import resource
import signal
import time

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Integer, Unicode

V2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")


class AulaSpawner(LocalProcessSpawner):
    cgroup_name = Unicode(
        "aula-hub", help="Prefix of the students' cgroups: NAME.USER (one NAME per hub)."
    ).tag(config=True)
    kernel_pool = Integer(
        0, help="Warm kernels kept per student (AULA_KERNEL_POOL; jupyterhub_config.py sizes it)."
    ).tag(config=True)

    def _cgroups(self):
        """The student's cgroup folders: one (v2), or one per controller (v1). At the top of
        the hierarchy, beside the machine's other processes: in a common parent group, all
        the students together would weigh as much as one process of the machine."""
        name = f"{self.cgroup_name}.{self.user.name}"
        if V2:
            return [f"/sys/fs/cgroup/{name}"]
        return [f"/sys/fs/cgroup/{c}/{name}" for c in ("memory", "cpu", "cpuacct")]

    def _settings(self):
        """(file, value) for the limits, per cgroup folder."""
        mem = str(int(self.mem_limit)) if self.mem_limit else None
        quota = int(self.cpu_limit * 100_000) if self.cpu_limit else None
        if V2:
            return [[("memory.max", mem), ("cpu.weight", "100"),
                     ("cpu.max", f"{quota} 100000" if quota else None)]]
        return [[("memory.limit_in_bytes", mem)],
                [("cpu.shares", "1024"), ("cpu.cfs_quota_us", str(quota) if quota else None)],
                []]  # cpuacct: only counts (cpuacct.usage: the student's CPU time, make hub-load)

    def _make_cgroups(self):
        """The student's cgroups with their limits; [] (logged) where cgroups are not writable."""
        made = []
        try:
            for path, settings in zip(self._cgroups(), self._settings()):
                os.makedirs(path, exist_ok=True)
                if V2:
                    with open("/sys/fs/cgroup/cgroup.subtree_control", "w") as f:
                        f.write("+memory +cpu")
                for name, value in settings:
                    if value is not None:
                        with open(os.path.join(path, name), "w") as f:
                            f.write(value)
                made.append(path)
        except OSError as e:
            self.log.warning("aula: no cgroup for %s (%s): memory limit and CPU share NOT enforced", self.user.name, e)
        return made

    def make_preexec_fn(self, name):
        demote = super().make_preexec_fn(name)
        procs = [os.path.join(p, "cgroup.procs") for p in self._made]

        def preexec():
            # In the child, before it becomes the student: join the cgroups (root may).
            for path in procs:
                with open(path, "w") as f:
                    f.write(str(os.getpid()))
            # Warm kernels start at nice 19 and the pool puts a claimed one back to 0, which
            # an unprivileged user may only do with RLIMIT_NICE ≥ 20 (never below 0). Raising
            # it needs CAP_SYS_RESOURCE, which some containers lack (this machine): then a
            # claimed kernel stays at 19, which only ranks it among the student's own
            # processes (their cgroup).
            try:
                resource.setrlimit(resource.RLIMIT_NICE, (20, 20))
            except (ValueError, OSError):
                pass
            demote()

        return preexec

    async def start(self):
        self._kill_cgroups()   # leftovers of a server that died (killed, OOM)
        self._made = self._make_cgroups()
        return await super().start()

    async def stop(self, now=False):
        await super().stop(now=now)
        self._kill_cgroups()

    def _pids(self):
        """The live processes in the student's cgroups (zombies are dead already: they wait
        for init to reap them, which it does)."""
        pids = set()
        for path in self._cgroups():
            try:
                with open(os.path.join(path, "cgroup.procs")) as f:
                    pids.update(int(p) for p in f.read().split())
            except OSError:
                pass
        alive = []
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                        alive.append(pid)
            except OSError:
                pass
        return alive

    def _kill_cgroups(self):
        """SIGKILL whatever is left in the student's cgroups (a pool's warm kernel, a cell's
        children), then remove them."""
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
            self.log.warning("aula: processes left in %s's cgroups: %s", self.user.name, self._pids())
        for path in self._cgroups():
            for _ in range(20):  # empty once init has reaped the zombies
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)

    def get_env(self):
        env = super().get_env()
        env["AULA_KERNEL_POOL"] = str(self.kernel_pool)
        env["AULA_KERNEL_POOL_MAX"] = "2"
        return env

    _made = ()
