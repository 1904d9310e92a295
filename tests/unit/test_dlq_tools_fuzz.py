"""The DLQ tools read records any producer may have written: whatever their headers and bytes,
`list` shows them and `replay` decides about them, never a crash (fuzzed with hypothesis)."""

from __future__ import annotations

import argparse
import json
import time

from confluent_kafka import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from kafka_project.dlq.dlq_producer import dlq_record_as_json, format_dlq_record
from kafka_project.dlq.replay import Decision, decide, origin_of
from kafka_project.order_codec import OrderCodec

codec = OrderCodec()
NAMES = [
    "dlq.original.topic",
    "dlq.original.partition",
    "dlq.original.offset",
    "dlq.replay.count",
    "dlq.error.type",
]
headers = st.lists(
    st.tuples(st.sampled_from(NAMES) | st.text(max_size=10), st.none() | st.binary(max_size=30)), max_size=8
)
ARGS = argparse.Namespace(error_type=None, order_id=None, max_replays=3)


# Bounded in CPU time, not wall time (hypothesis' deadline): beside the parallel suite a process
# is descheduled for a quarter second now and then.
@settings(max_examples=300, deadline=None)
@given(headers=headers, key=st.none() | st.binary(max_size=20), value=st.none() | st.binary(max_size=200))
def test_fuzz_dlq_records_are_listed_and_decided_never_a_crash(headers, key, value):
    started = time.thread_time()
    msg = Message(topic="orders-dlq", partition=0, offset=3, key=key, value=value, headers=headers)
    assert format_dlq_record(msg, codec, first_copy="orders-dlq [0] offset 1").startswith(
        "orders-dlq [0] offset 3"
    )
    assert json.loads(dlq_record_as_json(msg, codec))["offset"] == 3
    decision = decide(msg, ARGS, {"orders"})
    assert isinstance(decision, Decision) and decision.action in ("replay", "refuse")
    if decision.action == "replay":
        assert decision.target == "orders"
        assert [k for k, _ in decision.headers if k.startswith("dlq.")] == ["dlq.replay.count"]
    origin = origin_of(msg)
    assert origin is None or all(isinstance(part, str) and part for part in origin)
    assert time.thread_time() - started < 0.25
