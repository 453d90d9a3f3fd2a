#!/usr/bin/env python3
"""hub/distribute.py: the instructor's notebooks reach students without overwriting edits.
(Part of `make test-hub`; needs no root: temporary folders.)"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from distribute import distribute  # noqa: E402


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def read(path):
    with open(path) as f:
        return f.read()


def main():
    with tempfile.TemporaryDirectory() as t:
        src, dst, dist = (os.path.join(t, d) for d in ("instructor", "student", "handed"))
        os.makedirs(src)
        write(f"{src}/01.ipynb", "v1 of 01")
        write(f"{src}/02.ipynb", "v1 of 02")
        write(f"{src}/notes.txt", "not a notebook")

        acts = distribute(src, dst, dist)
        assert sorted(os.listdir(dst)) == ["01.ipynb", "02.ipynb"], os.listdir(dst)
        assert acts == ["01.ipynb: copied", "02.ipynb: copied"], acts
        assert distribute(src, dst, dist) == [], "nothing changed: nothing to do"

        # The student edits 01; the instructor updates both.
        write(f"{dst}/01.ipynb", "v1 of 01 + the student's work")
        write(f"{src}/01.ipynb", "v2 of 01")
        write(f"{src}/02.ipynb", "v2 of 02")
        acts = distribute(src, dst, dist)
        assert read(f"{dst}/01.ipynb") == "v1 of 01 + the student's work", "an edit was overwritten"
        assert read(f"{dst}/01.nuevo.ipynb") == "v2 of 01", "the new version is not beside the edited one"
        assert read(f"{dst}/02.ipynb") == "v2 of 02", "an unedited notebook was not updated"
        assert distribute(src, dst, dist) == [], "a second run changed something"

        # A notebook the student deleted comes back, in its latest version.
        os.remove(f"{dst}/02.ipynb")
        distribute(src, dst, dist)
        assert read(f"{dst}/02.ipynb") == "v2 of 02"
        # A later update of an edited notebook replaces the .nuevo copy, never theirs.
        write(f"{src}/01.ipynb", "v3 of 01")
        distribute(src, dst, dist)
        assert read(f"{dst}/01.ipynb") == "v1 of 01 + the student's work"
        assert read(f"{dst}/01.nuevo.ipynb") == "v3 of 01"
        # No temporary files left behind.
        assert not [f for f in os.listdir(dst) if f.startswith(".dist-")]
    print("hub distribute: ok", file=sys.stderr)


if __name__ == "__main__":
    main()
