#!/usr/bin/env python3
"""Fails when an executed notebook shows English that aula wrote (issue 19: the notebooks speak
Spanish; Keras's own console lines, which the slides show, may stay as Keras prints them).

    scripts/check-spanish.py out/check/*.ipynb              # every cell but the recorded ones
    scripts/check-spanish.py --recorded notebooks/*.ipynb   # only the recorded "no ejecutar" logs

Every text output is read: streams, text/plain (the alt text of every picture included), and
HTML with its tags removed. Lines Keras itself prints (and the summary() table) are allowed;
any other line holding a word from ENGLISH is reported with the notebook, the cell and the line.
The outputs of the cells tagged "no-ejecutar" are the logs of recorded runs: they change only
when `make render` records again, so they are checked apart (--recorded, in `make check-records`).
"""
import html
import json
import re
import sys

# Keras's own lines, as the slides show them.
KERAS = [
    r"Found \d+ images belonging to \d+ classes\.",
    r"Epoch \d+/\d+",
    r"\d+/\d+ - [\d.]+m?s - loss: .*",
    r"Train on \d+ samples(, validate on \d+ samples)?",
    r'Model: ".*"',
    r"Layer \(type\)\s+Output Shape\s+Param #",
    r"Layer \(type\)|Output Shape|Param #",  # the same header as HTML cells
    r"[_=]+",
    r"\w+ \(\w+\)\s+\(.*\)\s+[\d,]+",  # a summary() row: block1_conv1 (Conv2D)  (None, 150, 150, 64)  1792
    r"(Total|Trainable|Non-trainable) params: [\d,]+",
]
KERAS = [re.compile(rf"\s*{k}\s*") for k in KERAS]

# Words aula printed in English before issue 19, and the common words any English sentence has
# (not those Spanish spells the same: no, once, error).
ENGLISH = set("""
the and of with from through into not is are was were be been this that these those it its
for to on at by as or but if then than when where which while will would can could should
image images training validation smoothed epoch epochs extracting features feature frozen
resuming resumed done threads measured warning failed missing found loading loaded saved
cached cache kept next time layers layer weights best accuracy loss steps step samples sample
""".split())
# Identifiers and Keras vocabulary a Spanish sentence uses as is.
ALLOWED = {"acc", "val_acc", "loss", "val_loss", "accuracy"}
RECORDED = "no-ejecutar"

WORD = re.compile(r"[A-Za-zÁÉÍÓÚÜÑáéíóúüñ_]+")


def texts(cell):
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            yield "".join(out.get("text", ""))
        for mime, value in out.get("data", {}).items():
            value = "".join(value) if isinstance(value, list) else value
            if mime == "text/plain":
                yield value
            elif mime == "text/html":
                yield html.unescape(re.sub(r"<[^>]+>", "\n", value))
        if out.get("output_type") == "error":
            yield "\n".join([out.get("ename", ""), out.get("evalue", "")])


def english_words(line):
    # Code in backticks and paths are names, not prose.
    line = re.sub(r"`[^`]*`|\S*/\S*", " ", line)
    return [w for w in WORD.findall(line) if w.lower() in ENGLISH and w.lower() not in ALLOWED]


def check(path, recorded):
    problems = []
    nb = json.load(open(path, encoding="utf-8"))
    for index, cell in enumerate(nb["cells"]):
        if (RECORDED in cell.get("metadata", {}).get("tags", [])) != recorded:
            continue
        for text in texts(cell):
            for line in text.splitlines():
                if not line.strip() or any(k.fullmatch(line) for k in KERAS):
                    continue
                words = english_words(line)
                if words:
                    problems.append(f"{path}: cell {index} ({cell.get('id', '?')}): {', '.join(sorted(set(words)))}: {line.strip()[:160]}")
    return problems


def main(args):
    recorded = "--recorded" in args
    paths = [a for a in args if a != "--recorded"]
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    problems = [p for path in paths for p in check(path, recorded)]
    for p in problems:
        print(p)
    which = "recorded cells" if recorded else "cells"
    print(f"check-spanish: {len(paths)} notebooks ({which}), {len(problems)} lines in English", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
