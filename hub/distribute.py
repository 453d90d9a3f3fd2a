#!/usr/bin/env python3
"""Give a student the instructor's notebooks without ever overwriting the student's edits.

    distribute.py SOURCE_DIR STUDENT_DIR

Runs as the student (hub/singleuser.sh at every server start; `make hub-distribute` for
running servers). For each SOURCE_DIR/*.ipynb, with the copy last handed out kept in
~/.cache/aula/notebooks-dist/:
  - the student has none: it is copied;
  - the student's copy is the one last handed out (unedited) and the instructor's changed:
    it is replaced by the new version;
  - the student edited it and the instructor's changed: the new version is written beside it
    as NAME.nuevo.ipynb (theirs is untouched; JupyterLab shows both);
  - the instructor's is unchanged: nothing happens.
Files are written atomically (temporary file + rename).
"""
import os
import shutil
import sys
import tempfile


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def write_atomic(path, data):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".dist-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def distribute(src_dir, dst_dir, dist_dir):
    os.makedirs(dst_dir, exist_ok=True)
    os.makedirs(dist_dir, exist_ok=True)
    actions = []
    for name in sorted(os.listdir(src_dir)):
        if not name.endswith(".ipynb"):
            continue
        new = read(os.path.join(src_dir, name))
        handed = read(os.path.join(dist_dir, name))
        mine = read(os.path.join(dst_dir, name))
        if new == handed and mine is not None:
            continue
        if mine is None or mine == handed or mine == new:
            write_atomic(os.path.join(dst_dir, name), new)
            actions.append(f"{name}: {'copied' if mine is None else 'updated'}")
        else:
            stem = name[: -len(".ipynb")]
            write_atomic(os.path.join(dst_dir, f"{stem}.nuevo.ipynb"), new)
            actions.append(f"{name}: edited by the student, new version in {stem}.nuevo.ipynb")
        write_atomic(os.path.join(dist_dir, name), new)
    return actions


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    src, dst = sys.argv[1:]
    if not os.path.isdir(src):
        raise SystemExit(f"distribute: no notebooks folder {src}")
    dist = os.path.join(os.path.expanduser("~"), ".cache", "aula", "notebooks-dist")
    for line in distribute(src, dst, dist):
        print(f"distribute: {line}", file=sys.stderr)


if __name__ == "__main__":
    main()
