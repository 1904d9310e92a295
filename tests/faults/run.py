"""Run every fault scenario against a broker of its own and print one table; exit 1 unless every row is exact.

Examples:
  python -m tests.faults.run                       # 3,000 orders a scenario, both delivery modes
  python -m tests.faults.run --orders 500 --only kafka-sigkill --json faults.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from .harness import MODES, REPO, FaultBroker, Row
from .scenarios import SCENARIOS, modes_of

# Each run's logs replace the last run's, under the suite broker's git-ignored directory.
LOGS = REPO / ".local-kafka/faults/logs"
COLUMNS = ("scenario", "mode", "produced", "processed", "in DLQ", "lost", "counted twice", "exact", "seconds")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--orders", type=int, default=3000, help="orders per scenario (default %(default)s)")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--mode", action="append", choices=MODES, help="run only these modes")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the table as JSON")
    return parser.parse_args(argv)


def format_table(rows: list[tuple[Row, float]]) -> str:
    cells = [COLUMNS] + [
        (
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
        for r, seconds in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    notes = [f"  {r.scenario}/{r.mode}: {note}" for r, _ in rows for note in r.notes]
    return "\n".join(lines + (["notes:", *notes] if notes else []))


def main(args: argparse.Namespace) -> int:
    broker = FaultBroker()
    broker.start()
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    runs = [(name, mode) for name in args.only or SCENARIOS for mode in modes_of(name, args.mode or MODES)]
    rows: list[tuple[Row, float]] = []
    try:
        for number, (name, mode) in enumerate(runs, start=1):
            started = time.monotonic()
            row = SCENARIOS[name](broker, mode, args.orders, LOGS)
            rows.append((row, time.monotonic() - started))
            verdict = "exact" if row.exact else "NOT EXACT"
            print(f"[{number}/{len(runs)}] {name} ({mode}): {verdict}", file=sys.stderr, flush=True)
    finally:
        broker.stop()
    print(format_table(rows))
    print(f"logs: {LOGS.relative_to(REPO)}")
    if args.json:
        args.json.write_text(json.dumps([{**r.as_dict(), "seconds": round(s, 1)} for r, s in rows], indent=2))
    return 0 if rows and all(r.exact for r, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main(parse_args()))
