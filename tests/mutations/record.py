#!/usr/bin/env python3
"""Writes the table of mutations into SECURITY.md, between its
`tests/mutations/run.sh` markers: each patch's name, what it breaks, the
tests that must catch it, and the verdict of its last run by
`tests/mutations/run.sh`, with the date and the revision of that run.

    tests/mutations/record.py RESULTS

RESULTS holds lines of `NAME VERDICT` from the run just made; the other
rows keep the verdicts of their own last runs (read back from the table),
as long as their patches are the ones those runs applied (each verdict
names its patch's git hash).
Called by run.sh; never edit the table by hand.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SECURITY = ROOT / "SECURITY.md"
BEGIN = "<!-- tests/mutations/run.sh: begin -->"
END = "<!-- tests/mutations/run.sh: end -->"
ROW = re.compile(r"^\| `([^`]+)` \|.*\| ([^|]+) \|$")


def patches() -> list[tuple[str, str, list[str]]]:
    """(name, what it breaks, caught by) of every patch, by name."""
    found = []
    for path in sorted(HERE.glob("*.patch")):
        lines = path.read_text().splitlines()
        breaks = next(
            line[len("Breaks: ") :] for line in lines if line.startswith("Breaks: ")
        )
        caught = [
            line[len("Caught-by: ") :]
            for line in lines
            if line.startswith("Caught-by: ")
        ]
        found.append((path.stem, breaks, caught))
    return found


def patch_hash(name: str, revision: str | None = None) -> str | None:
    """The short git hash of the patch's contents, as they are now or at
    `revision` (None where it has no such patch)."""
    path = HERE / f"{name}.patch"
    if revision is not None:
        found = subprocess.run(
            ["git", "rev-parse", f"{revision}:tests/mutations/{name}.patch"],
            check=False,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        return found.stdout[:7] if found.returncode == 0 else None
    if not path.exists():
        return None
    return subprocess.run(
        ["git", "hash-object", str(path)], check=True, capture_output=True, text=True
    ).stdout[:7]


def main() -> None:
    text = SECURITY.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        sys.exit(f"{SECURITY}: expected one pair of `tests/mutations/run.sh` markers")
    head, rest = text.split(BEGIN)
    old, tail = rest.split(END)
    last = {m[1]: m[2].strip() for line in old.splitlines() if (m := ROW.match(line))}
    rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    stamp = f"{time.strftime('%Y-%m-%d', time.gmtime())}, {rev}"
    for line in Path(sys.argv[1]).read_text().splitlines():
        if line.strip():
            name, verdict = line.split()
            last[name] = f"{verdict} ({stamp}, patch {patch_hash(name)})"
    # A verdict holds for the patch it was made with: one changed since
    # has not been run. (A verdict that names only its revision names the
    # patch as it was there.)
    for name, verdict in list(last.items()):
        made_with = re.search(r"patch ([0-9a-f]+)\)$", verdict)
        if made_with is None:
            at = re.search(r"^(caught|MISSED) \(([0-9-]+), ([0-9a-f]+)\)$", verdict)
            then = at and patch_hash(name, at[3])
            if then and then == patch_hash(name):
                last[name] = f"{at[1]} ({at[2]}, {at[3]}, patch {then})"
                continue
        if made_with is None or made_with[1] != patch_hash(name):
            last[name] = "not run since the patch changed"
    rows = [
        "| mutation | what it breaks | caught by | last run |",
        "|---|---|---|---|",
    ]
    caught, missed, unrun = 0, [], 0
    for name, breaks, tests in patches():
        verdict = last.get(name, "not run")
        if verdict.startswith("caught"):
            caught += 1
        elif verdict.startswith("MISSED"):
            missed.append(name)
        else:
            unrun += 1
        listed = ", ".join(f"`{test}`" for test in tests)
        rows.append(f"| `{name}` | {breaks} | {listed} | {verdict} |")
    total = caught + len(missed) + unrun
    headline = (
        f"Caught in their last runs by `tests/mutations/run.sh` (the last column): "
        f"{caught} of {total}."
    )
    if missed:
        headline += f" Missed: {', '.join(missed)}."
    if unrun:
        headline += f" Not run yet: {unrun}."
    SECURITY.write_text(
        f"{head}{BEGIN}\n{headline}\n\n" + "\n".join(rows) + f"\n{END}{tail}"
    )


if __name__ == "__main__":
    main()
