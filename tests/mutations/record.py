#!/usr/bin/env python3
"""Writes the table of mutations into SECURITY.md, between its
`tests/mutations/run.sh` markers: each patch's name, what it breaks, the
tests that must catch it, and the verdict of the last run of
`tests/mutations/run.sh` (from RESULTS, lines of `NAME VERDICT`).

    tests/mutations/record.py RESULTS "HEADLINE"

Called by run.sh when it ran every mutation; never edit the table by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECURITY = HERE.parent.parent / "SECURITY.md"
BEGIN = "<!-- tests/mutations/run.sh: begin -->"
END = "<!-- tests/mutations/run.sh: end -->"


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


def main() -> None:
    results_path, headline = sys.argv[1], sys.argv[2]
    verdicts = dict(
        line.split() for line in Path(results_path).read_text().splitlines() if line
    )
    rows = [
        "| mutation | what it breaks | caught by | last run |",
        "|---|---|---|---|",
    ]
    for name, breaks, caught in patches():
        tests = ", ".join(f"`{test}`" for test in caught)
        rows.append(
            f"| `{name}` | {breaks} | {tests} | {verdicts.get(name, 'not run')} |"
        )
    text = SECURITY.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        sys.exit(f"{SECURITY}: expected one pair of `tests/mutations/run.sh` markers")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    SECURITY.write_text(
        f"{head}{BEGIN}\n{headline}\n\n" + "\n".join(rows) + f"\n{END}{tail}"
    )


if __name__ == "__main__":
    main()
