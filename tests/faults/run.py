"""Run the fault scenarios on a cluster of their own and print one table; exit 1 unless every row is exact.

Examples:
  python -m tests.faults.run                   # one ZooKeeper broker: 3,000 orders a scenario, both modes
  python -m tests.faults.run --shape all       # and three brokers, KRaft, three KRaft nodes: the full matrix
  python -m tests.faults.run --shape three-brokers --orders 500 --only leader-sigkill --json faults.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from .harness import MODES, REPO, SHAPES, FaultBroker, Row
from .scenarios import SUITES, modes_of

# Each run's logs replace the last run's, under the suite broker's git-ignored directory.
LOGS = REPO / ".local-kafka/faults/logs"
COLUMNS = (
    "cluster",
    "scenario",
    "mode",
    "produced",
    "processed",
    "in DLQ",
    "lost",
    "counted twice",
    "exact",
    "seconds",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--orders", type=int, default=3000, help="orders per scenario (default %(default)s)")
    parser.add_argument(
        "--shape",
        action="append",
        choices=[*SHAPES, "all"],
        help="cluster shapes to run on (default: zookeeper, one broker); each has its own scenarios",
    )
    every_scenario = sorted({name for suite in SUITES.values() for name in suite})
    parser.add_argument("--only", action="append", choices=every_scenario, help="run only these scenarios")
    parser.add_argument("--mode", action="append", choices=MODES, help="run only these modes")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the table as JSON")
    return parser.parse_args(argv)


def format_table(rows: list[tuple[str, Row, float]]) -> str:
    cells = [COLUMNS] + [
        (
            shape,
            r.scenario,
            r.mode,
            str(r.produced),
            "-" if r.processed is None else str(r.processed),
            "-" if r.in_dlq is None else str(r.in_dlq),
            str(r.lost),
            str(r.counted_twice),
            "pass" if r.exact else "FAIL",
            f"{seconds:.0f}",
        )
        for shape, r, seconds in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    notes = [f"  {s}/{r.scenario}/{r.mode}: {note}" for s, r, _ in rows for note in r.notes]
    figures = [f"  {s}/{r.scenario}/{r.mode}: {figure}" for s, r, _ in rows for figure in r.figures]
    return "\n".join(
        lines + (["notes:", *notes] if notes else []) + (["figures:", *figures] if figures else [])
    )


def planned_runs(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(shape, scenario, mode) for every run asked for, shape by shape."""
    shapes = list(SHAPES) if "all" in (args.shape or []) else args.shape or ["zookeeper"]
    return [
        (shape, name, mode)
        for shape in shapes
        for name in SUITES[shape]
        if not args.only or name in args.only
        for mode in modes_of(name, args.mode or MODES)
    ]


def main(args: argparse.Namespace) -> int:
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    runs = planned_runs(args)
    rows: list[tuple[str, Row, float]] = []
    for shape in dict.fromkeys(shape for shape, _, _ in runs):
        broker = FaultBroker(shape)  # one shape's cluster at a time: they share the suite's ports
        broker.start()
        try:
            for number, (_, name, mode) in enumerate(runs, start=1):
                if _ != shape:
                    continue
                started = time.monotonic()
                row = SUITES[shape][name](broker, mode, args.orders, LOGS)
                rows.append((shape, row, time.monotonic() - started))
                verdict = "exact" if row.exact else "NOT EXACT"
                print(
                    f"[{number}/{len(runs)}] {shape}: {name} ({mode}): {verdict}", file=sys.stderr, flush=True
                )
        finally:
            broker.stop()
    print(format_table(rows))
    print(f"logs: {LOGS.relative_to(REPO)}")
    if args.json:
        table = [{"cluster": shape, **r.as_dict(), "seconds": round(s, 1)} for shape, r, s in rows]
        args.json.write_text(json.dumps(table, indent=2))
    return 0 if rows and all(r.exact for _, r, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main(parse_args()))
