"""aula's JupyterHub: a class on one machine (`make hub`; hub/README.md).

Everything comes from the environment hub/run.sh sets:
  AULA_HUB_PREFIX     the shared install (hub/setup.sh; default /opt/aula-hub)
  AULA_HUB_STATE      the hub's database, cookie secret and passwords (default PREFIX/state)
  AULA_HUB_CLASSLIST  the class list (default PREFIX/src/hub/classlist.txt)
  AULA_HUB_PORT       the public port (default 8000; the hub's own API and the proxy's take
                      the next two)
  AULA_HUB_MEM_LIMIT  memory per student (default: from the measured kernel RSS, below)
  AULA_HUB_IDLE       seconds of inactivity before the culler stops a server (default 3600)
  AULA_HUB_CULL_EVERY seconds between the culler's checks (default 300)
  AULA_HUB_CPU_LIMIT  cores per student (default none: every student the same CPU weight)
  AULA_HUB_AUTH       "firstuse" (default) or "dummy" (tests only: any password)
"""
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from classlist import read  # noqa: E402

c = get_config()  # noqa: F821

prefix = os.environ.get("AULA_HUB_PREFIX", "/opt/aula-hub")
state = os.environ.get("AULA_HUB_STATE", f"{prefix}/state")
classlist = os.environ.get("AULA_HUB_CLASSLIST", f"{prefix}/src/hub/classlist.txt")
port = int(os.environ.get("AULA_HUB_PORT", "8000"))
idle = int(os.environ.get("AULA_HUB_IDLE", "3600"))
GiB = 1024**3

# --- where it listens, where it keeps its state ------------------------------------------
c.JupyterHub.bind_url = f"http://{os.environ.get('AULA_HUB_IP', '0.0.0.0')}:{port}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = port + 1
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{port + 2}"
c.ConfigurableHTTPProxy.command = [f"{prefix}/node/node_modules/.bin/configurable-http-proxy"]
c.ConfigurableHTTPProxy.pid_file = f"{state}/proxy.pid"
c.JupyterHub.db_url = f"sqlite:///{state}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = f"{state}/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = f"{state}/jupyterhub.pid"

# --- who may log in -----------------------------------------------------------------------
users, admins = read(classlist)
c.Authenticator.allowed_users = set(users)
c.Authenticator.admin_users = set(admins)
if os.environ.get("AULA_HUB_AUTH", "firstuse") == "dummy":
    c.JupyterHub.authenticator_class = "dummy"
else:
    # The first login of a listed user sets their password (hashed with bcrypt in a dbm
    # file); unlisted names are refused. The instructor hands out the URL in class.
    c.JupyterHub.authenticator_class = "firstuseauthenticator.FirstUseAuthenticator"
    c.FirstUseAuthenticator.dbm_path = f"{state}/passwords.dbm"
    c.FirstUseAuthenticator.create_users = False
    c.FirstUseAuthenticator.min_password_length = 8

# --- each student's server --------------------------------------------------------------
c.JupyterHub.spawner_class = "aula_spawner.AulaSpawner"
c.AulaSpawner.cmd = [f"{prefix}/src/hub/singleuser.sh"]
c.AulaSpawner.cgroup_name = f"aula-hub-{port}"
if os.environ.get("AULA_HUB_CPU_LIMIT"):  # cores per student; by default a fair share only
    c.Spawner.cpu_limit = float(os.environ["AULA_HUB_CPU_LIMIT"])
c.Spawner.default_url = "/lab/tree/notebooks"
c.Spawner.notebook_dir = "~"
# The first start copies the template (≈ 700 MB) into the student's home.
c.Spawner.start_timeout = 600
c.Spawner.http_timeout = 300
c.Spawner.poll_interval = 10  # a killed server is noticed within seconds
c.JupyterHub.implicit_spawn_seconds = 3  # a browser on a stopped server restarts it
# Kernels idle for the culler's time are shut down by the server itself.
c.Spawner.args = [f"--MappingKernelManager.cull_idle_timeout={idle}", "--MappingKernelManager.cull_interval=300"]

# Memory: a kernel's peak RSS as `make hub-load` measured it on this install
# (PREFIX/state/kernel-rss.json, whatever AULA_HUB_STATE is), else 1.5 GiB (kernel/README.md
# measured ≈ 1.3 GB for a kernel at rest).
try:
    kernel_rss = json.load(open(f"{prefix}/state/kernel-rss.json"))["kernel_rss_bytes"]
except (OSError, ValueError, KeyError):
    kernel_rss = int(1.5 * GiB)
server_rss = int(0.25 * GiB)  # jupyterhub-singleuser + JupyterLab
mem_total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
reserve = 2 * GiB  # the hub, the proxy, the system
# A warm kernel per student (ready in < 1 s instead of ≈ 30 s) only if the whole class fits
# with two kernels each (the one in use and the spare); otherwise kernels start cold.
per_student_with_pool = server_rss + 2 * kernel_rss
pool = 1 if len(users) * per_student_with_pool <= mem_total - reserve else 0
c.AulaSpawner.kernel_pool = pool
limit = os.environ.get("AULA_HUB_MEM_LIMIT")
c.Spawner.mem_limit = limit if limit else server_rss + (1 + pool) * kernel_rss + GiB // 2

# --- the idle culler (jupyterhub-idle-culler, a hub service) ------------------------------
c.JupyterHub.services = [{
    "name": "idle-culler",
    "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={idle}",
                f"--cull-every={os.environ.get('AULA_HUB_CULL_EVERY', '300')}"],
}]
c.JupyterHub.load_roles = [{
    "name": "idle-culler",
    "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
    "services": ["idle-culler"],
}]
# Stopping the hub stops every student's server (and AulaSpawner.stop kills their kernels).
c.JupyterHub.cleanup_servers = True
print(f"aula hub: {len(users)} users ({', '.join(admins)} admin), kernel RSS {kernel_rss / GiB:.2f} GiB, "
      f"warm kernels per student {pool}, memory limit per student {c.Spawner.mem_limit}",
      file=sys.stderr)
