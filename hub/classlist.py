#!/usr/bin/env python3
"""The class list: one user name a line, "NAME admin" for the instructor, # comments.

    classlist.py FILE                   prints the students and admins (checks the file)
    classlist.py FILE --create-users    (root) one Unix user per name, home 0700

Read by hub/jupyterhub_config.py (allowed and admin users) and hub/setup.sh.
"""
import os
import pwd
import re
import subprocess
import sys

NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def read(path):
    """(users, admins) of the class list at `path`; raises ValueError naming the line."""
    users, admins = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            name, flags = words[0], words[1:]
            if not NAME.match(name) or flags not in ([], ["admin"]):
                raise ValueError(f"{path}:{n}: expected 'NAME' or 'NAME admin' with NAME in "
                                 f"[a-z_][a-z0-9_-]*, got {line.strip()!r}")
            if name in users:
                raise ValueError(f"{path}:{n}: {name} is listed twice")
            if name == "root":
                raise ValueError(f"{path}:{n}: root cannot be a hub user")
            users.append(name)
            if flags:
                admins.append(name)
    if not users:
        raise ValueError(f"{path}: no user names")
    return users, admins


def create_users(users):
    """A Unix user per name (home 0700: no one else reads it); existing ones are kept."""
    for name in users:
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--create-home", "--user-group", "--shell", "/bin/bash", name], check=True)
            pw = pwd.getpwnam(name)
            print(f"hub: created user {name} ({pw.pw_dir})")
        if pw.pw_uid == 0:
            raise SystemExit(f"hub: {name} is uid 0; refusing")
        os.chmod(pw.pw_dir, 0o700)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    try:
        users, admins = read(sys.argv[1])
    except (OSError, ValueError) as e:
        raise SystemExit(f"hub: class list: {e}")
    if "--create-users" in sys.argv[2:]:
        create_users(users)
    print(f"hub: class list {sys.argv[1]}: {len(users)} users, admins: {', '.join(admins) or 'none'}")
