"""Where a test run's time went, per test file: `./bin/test --junitxml=run.xml`, then
`python -m tests.durations run.xml` (several files: one column pair each, e.g. before and after)."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import defaultdict


def per_file(path: str) -> dict[str, tuple[int, float]]:
    """test module -> (tests, seconds summed over its tests: setup, call and teardown)."""
    tests: dict[str, int] = defaultdict(int)
    seconds: dict[str, float] = defaultdict(float)
    for case in ET.parse(path).iter("testcase"):
        module = case.get("classname", "?")
        tests[module] += 1
        seconds[module] += float(case.get("time", 0))
    return {module: (tests[module], seconds[module]) for module in tests}


def main(paths: list[str]) -> None:
    runs = [per_file(path) for path in paths]
    modules = sorted(
        {m for run in runs for m in run}, key=lambda m: -max(r.get(m, (0, 0.0))[1] for r in runs)
    )
    print("file".ljust(45) + "".join(f"{'tests':>7}{'s':>8}" for _ in runs))
    for module in [*modules, "total"]:
        cells = []
        for run in runs:
            count, secs = (
                (sum(c for c, _ in run.values()), sum(s for _, s in run.values()))
                if module == "total"
                else run.get(module, (0, 0.0))
            )
            cells.append(f"{count:>7}{secs:>8.0f}")
        print(module.removeprefix("tests.").ljust(45) + "".join(cells))


if __name__ == "__main__":
    main(sys.argv[1:])
