#!/usr/bin/env python3
"""Checks that the recorded runs are traceable (issue: recorded outputs on main).

1. No stored output of a notebook shows one machine's absolute paths (/root/…, /home/<user>/…,
   /work/…, /tmp/…): recorded logs show paths relative to the repository or ~.
2. Every assets/rendered/<step>/provenance.json names a commit that is an ancestor of HEAD
   (the render ran on code that is in the history), and has the fields a reader needs.

    python3 scripts/check-records.py [REPO]      exit 1 and one line per problem when any
"""
import json
import re
import subprocess
import sys
from pathlib import Path

repo = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
ABSOLUTE = re.compile(r"(?<![\w.~])/(?:root|home/[^/\s]+|work|tmp)/[^\s\"']*")
FIELDS = ["commit", "started", "ended", "wall_s", "epoch_s", "device", "cpu", "threads", "libtorch", "sessions", "epochs"]
problems = []

def texts(output):
    for key in ("text", "traceback"):
        value = output.get(key)
        if value:
            yield "".join(value) if isinstance(value, list) else value
    for mime, value in output.get("data", {}).items():
        if mime.startswith("text/"):
            yield "".join(value) if isinstance(value, list) else value

for nb in sorted((repo / "notebooks").glob("*.ipynb")):
    for i, cell in enumerate(json.loads(nb.read_text())["cells"]):
        for output in cell.get("outputs", []):
            for text in texts(output):
                for m in ABSOLUTE.finditer(text):
                    problems.append(f"{nb.relative_to(repo)}: cell {i} shows an absolute path: {m.group(0)}")

for prov in sorted((repo / "assets" / "rendered").glob("*/provenance.json")):
    record = json.loads(prov.read_text())
    where = prov.relative_to(repo)
    missing = [f for f in FIELDS if record.get(f) in (None, "", [])]
    if missing:
        problems.append(f"{where}: lacks {', '.join(missing)}")
    commit = record.get("commit")
    if commit:
        ok = subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", commit, "HEAD"],
                            capture_output=True).returncode == 0
        if not ok:
            problems.append(f"{where}: commit {commit} is not in the history of HEAD")
    if record.get("uncommitted_changes"):
        problems.append(f"{where}: rendered from a checkout with uncommitted changes")

for p in problems:
    print(p)
print(f"check-records: {len(problems)} problem(s)" if problems else "check-records: ok")
sys.exit(1 if problems else 0)
