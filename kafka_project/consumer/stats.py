"""Show the aggregate kept in orders-stats: each partition (or share consumer), and the global average.

The global average is the sum of the totals over the sum of the counts: of the partitions, as
committed by consumers running with --exactly-once (read with isolation.level=read_committed), or
of the processes of a share group (share_consumer.py; at-least-once: an order whose acceptance
never reached the broker in time is counted again by another).

Examples:
  python kafka_project/consumer/stats.py
  python kafka_project/consumer/stats.py --group-id order-consumer --json
"""

from __future__ import annotations

import argparse
import json
import sys

from kafka_project.cli import add_env_flag, make_parser, parse_with_connection, run
from kafka_project.cluster import partitions_with_open_transactions
from kafka_project.consumer.state import PartitionState, combined, read_snapshots


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    add_env_flag(parser, "--stats-topic", "STATS_TOPIC", "orders-stats", "compacted topic of snapshots")
    add_env_flag(parser, "--group-id", "KAFKA_GROUP_ID", "order-consumer", "consumer group")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return parse_with_connection(build_parser(), argv)


def main(args: argparse.Namespace) -> int:
    states = read_snapshots(args.bootstrap_servers, args.stats_topic, args.group_id)
    states.sort(
        key=lambda s: (s.topic, s.partition, "") if isinstance(s, PartitionState) else ("", -1, s.consumer)
    )
    total = combined([state.aggregate() for state in states])
    if open_partitions := partitions_with_open_transactions(args.bootstrap_servers, args.stats_topic):
        print(
            f"warning: a transaction is still open on {args.stats_topic} {open_partitions} (a consumer "
            "crashed mid-transaction?); these figures may lag until the broker aborts it",
            file=sys.stderr,
        )
    if args.json:
        print(
            json.dumps(
                {
                    "group": args.group_id,
                    "count": total.count,
                    "total": str(total.total_price),
                    "avg": str(total.avg),
                    "partitions": [json.loads(s.to_json()) for s in states if isinstance(s, PartitionState)],
                    "share_consumers": [
                        json.loads(s.to_json()) for s in states if not isinstance(s, PartitionState)
                    ],
                }
            )
        )
        return 0
    for state in states:
        aggregate = state.aggregate()
        figures = f"count={aggregate.count}  total={aggregate.total_price}  avg={aggregate.avg}"
        if isinstance(state, PartitionState):
            print(f"{state.topic} [{state.partition}]  {figures}  next_offset={state.next_offset}")
        else:
            print(f"share consumer {state.consumer}  {figures}")
    print(f"Global: count={total.count} total={total.total_price} avg={total.avg}")
    return 0


def cli() -> None:
    run(lambda: main(parse_args()))


if __name__ == "__main__":
    cli()
