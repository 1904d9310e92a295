"""dlq_producer.py replay: back to the original topic once, with a replay count, never round and round."""

import signal
import threading
from decimal import Decimal

import pytest
from confluent_kafka import OFFSET_INVALID as OFFSET_NONE
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from kafka_project.cluster import partitions_with_open_transactions
from kafka_project.dlq import dlq_producer
from kafka_project.dlq import replay as replay_module
from kafka_project.order_codec import OrderCodec

from ..topics import set_topic_config
from .conftest import (
    committed_offset,
    consumer_args,
    headers_of,
    produce_orders,
    records,
    run_ok,
    run_script,
    start_script,
    summary,
    wait_until,
)


def replayed_headers(topics) -> dict[str, str]:
    """What replay adds to a record it sends back: its count, and the group that dead-lettered it."""
    return {"dlq.replay.count": "1", "dlq.replay.group": topics.group}


def replay(topics, *extra: str):
    result = run_script(
        "dlq", "replay", "--topic", topics.dlq, "--group-id", f"{topics.group}-replay", *extra
    )
    assert result.returncode == 0, result.stderr
    return result


def fail_everything(topics, *extra: str):
    result = run_script(
        "consumer",
        *consumer_args(
            topics, "--failure-rate", "1", "--max-attempts", "1", "--idle-timeout", "3", "--quiet", *extra
        ),
    )
    assert result.returncode == 0, result.stderr
    return result


def test_replay_sends_each_record_back_once_and_refuses_loops(bootstrap_servers, topics):
    produce_orders(topics.orders, 5, "--seed", "8")
    fail_everything(topics)
    originals = records(bootstrap_servers, topics.orders)
    assert len(records(bootstrap_servers, topics.dlq)) == 5

    dry = replay(topics, "--dry-run")
    assert dry.stdout.count("Would replay") == 5
    expected = "Dry run: nothing was sent or committed.\nSummary: would_replay=5 refused=0 skipped=0"
    assert expected in dry.stdout
    assert len(records(bootstrap_servers, topics.orders)) == 5  # nothing sent

    assert summary(replay(topics, "--limit", "2"))["replayed"] == "2"
    assert summary(replay(topics))["replayed"] == "3"  # the rest, not the first two again
    assert summary(replay(topics))["replayed"] == "0"
    replayed = records(bootstrap_servers, topics.orders)[5:]
    assert [m.value() for m in replayed] == [m.value() for m in originals]  # byte for byte, in order
    assert [m.key() for m in replayed] == [m.key() for m in originals]
    assert all(headers_of(m) == replayed_headers(topics) for m in replayed)

    fail_everything(topics)  # the cause is not fixed: the replayed orders fail again
    again = records(bootstrap_servers, topics.dlq)[5:]
    assert len(again) == 5 and all(headers_of(m)["dlq.replay.count"] == "1" for m in again)
    refused = replay(topics, "--max-replays", "1")
    assert summary(refused) == {"replayed": "0", "refused": "5", "skipped": "0", "duplicates": "0"}
    assert "replayed 1 times already" in refused.stdout


def test_filters_pass_over_other_records(bootstrap_servers, topics):
    produce_orders(topics.orders, 3, "--seed", "9")
    fail_everything(topics)
    first_id = records(bootstrap_servers, topics.dlq)[0].key().decode()
    by_type = replay(topics, "--error-type", "UnknownSchemaError", "--dry-run")
    assert summary(by_type)["skipped"] == "3"
    by_id = replay(topics, "--order-id", first_id)
    assert summary(by_id) == {"replayed": "1", "refused": "0", "skipped": "2", "duplicates": "0"}
    assert [m.key().decode() for m in records(bootstrap_servers, topics.orders)[3:]] == [first_id]


def test_a_replay_count_that_is_not_a_number_is_refused_and_the_replay_goes_on(bootstrap_servers, topics):
    """A DLQ copy keeps the original's headers, so any producer can set dlq.replay.count."""
    producer = Producer({"bootstrap.servers": bootstrap_servers})
    origin = ("dlq.original.topic", topics.orders.encode())
    producer.produce(topics.dlq, key=b"ORD-BAD", value=b"bad", headers=[origin, ("dlq.replay.count", b"abc")])
    producer.produce(topics.dlq, key=b"ORD-GOOD", value=b"\x00good\xff", headers=[origin])
    assert producer.flush(30) == 0

    result = replay(topics)
    assert "Traceback" not in result.stderr
    assert summary(result) == {"replayed": "1", "refused": "1", "skipped": "0", "duplicates": "0"}
    assert (
        f"Refused {topics.dlq} [0] offset 0 (orderId ORD-BAD): dlq.replay.count 'abc' is not" in result.stdout
    )
    replayed = records(bootstrap_servers, topics.orders)
    assert [(m.key(), m.value()) for m in replayed] == [(b"ORD-GOOD", b"\x00good\xff")]
    assert headers_of(replayed[0]) == {"dlq.replay.count": "1"}
    # Progress was committed past both: a second run finds nothing left to do.
    assert summary(replay(topics)) == {"replayed": "0", "refused": "0", "skipped": "0", "duplicates": "0"}


def test_a_record_whose_original_topic_is_gone_is_refused_and_the_replay_goes_on(bootstrap_servers, topics):
    producer = Producer({"bootstrap.servers": bootstrap_servers})
    gone = ("dlq.original.topic", b"orders-deleted-long-ago")
    producer.produce(topics.dlq, key=b"ORD-GONE", value=b"x", headers=[gone])
    producer.produce(
        topics.dlq, key=b"ORD-GOOD", value=b"y", headers=[("dlq.original.topic", topics.orders.encode())]
    )
    assert producer.flush(30) == 0

    result = replay(topics)
    assert result.returncode == 0, result.stderr
    assert summary(result) == {"replayed": "1", "refused": "1", "skipped": "0", "duplicates": "0"}
    assert "(orderId ORD-GONE): its original topic 'orders-deleted-long-ago' does not exist" in result.stdout
    assert [m.key() for m in records(bootstrap_servers, topics.orders)] == [b"ORD-GOOD"]
    assert summary(replay(topics)) == {"replayed": "0", "refused": "0", "skipped": "0", "duplicates": "0"}


def origins(dlq_records) -> list[tuple[str, str, str]]:
    return [
        tuple(headers_of(m)[f"dlq.original.{name}"] for name in ("topic", "partition", "offset"))
        for m in dlq_records
    ]


def test_after_a_crash_replay_brings_each_original_back_once(bootstrap_servers, topics, tmp_path):
    """An at-least-once consumer killed after the DLQ acknowledged copies but before their offsets
    were committed writes them again on restart. Replay sent every copy: every order counted twice."""
    produce_orders(topics.orders, 200, "--seed", "5")
    originals = records(bootstrap_servers, topics.orders)
    args = consumer_args(topics, "--failure-rate", "1", "--max-attempts", "1", "--retry-backoff", "0")
    log = tmp_path / "killed.log"
    killed = start_script("consumer", *args, stdout_path=log)
    wait_until(lambda: log.read_text().count("Moved to DLQ") >= 100, 60, "100 DLQ copies")
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    fail_everything(topics)  # the restart: what was not committed is dead-lettered again
    # And one copy written a third time, byte for byte, as another crash would: a duplicate for sure.
    dead = records(bootstrap_servers, topics.dlq)
    producer = Producer({"bootstrap.servers": bootstrap_servers})
    producer.produce(topics.dlq, key=dead[0].key(), value=dead[0].value(), headers=dead[0].headers())
    assert producer.flush(30) == 0
    dead = records(bootstrap_servers, topics.dlq)
    copies = len(dead) - 200
    assert copies >= 1 and len(set(origins(dead))) == 200

    listing = run_ok("dlq", "list", "--topic", topics.dlq)
    assert listing.stdout.count("duplicate: second copy of") == copies
    assert listing.stdout.rstrip().endswith(
        f"{len(dead)} record(s) in {topics.dlq}, {copies} of them second copies of an original"
    )
    dry = replay(topics, "--dry-run")
    assert summary(dry) == {"would_replay": "200", "refused": "0", "skipped": "0", "duplicates": str(copies)}
    assert summary(replay(topics, "--limit", "120")) == {
        "replayed": "120",
        "refused": "0",
        "skipped": "0",
        "duplicates": str(dead_before(dead, 120)),
    }
    rest = replay(topics)
    assert summary(rest)["replayed"] == "80"
    assert summary(replay(topics)) == {"replayed": "0", "refused": "0", "skipped": "0", "duplicates": "0"}

    replayed = records(bootstrap_servers, topics.orders)[200:]
    assert sorted(m.value() for m in replayed) == sorted(m.value() for m in originals)  # each once
    counted = run_script(
        "consumer", *consumer_args(topics, "--failure-rate", "0", "--idle-timeout", "3", "--quiet")
    )
    codec = OrderCodec()
    total = sum((codec.decode(m.value()).price for m in originals), Decimal("0.00"))
    assert summary(counted)["processed"] == "200" and summary(counted)["total"] == str(total)


def test_a_second_replay_of_the_same_group_is_refused_while_one_runs(bootstrap_servers, topics, tmp_path):
    """Two at once each replayed the copies in their own DLQ partition: every original twice."""
    produce_orders(topics.orders, 5, "--seed", "2")
    fail_everything(topics)
    log = tmp_path / "first.log"
    group = ("--topic", topics.dlq, "--group-id", f"{topics.group}-replay")
    first = start_script("dlq", "replay", *group, "--rate", "2", stdout_path=log)
    wait_until(lambda: "Replayed" in log.read_text(), 60, "the first replay at work")
    second = run_script("dlq", "replay", *group)
    assert second.returncode == 1
    assert f"the replay group '{topics.group}-replay' has 1 member(s): another replay runs" in second.stderr
    assert summary(run_script("dlq", "replay", *group, "--dry-run"))["would_replay"] in {
        "0",
        "1",
        "2",
        "3",
        "4",
    }
    assert first.wait(60) == 0
    assert summary(log.read_text())["replayed"] == "5"
    assert len(records(bootstrap_servers, topics.orders)) == 10


def dead_before(dead, replayed: int) -> int:
    """How many duplicates a replay meets before its `replayed`-th first copy."""
    met, duplicates = set(), 0
    for origin in origins(dead):
        if origin in met:
            duplicates += 1
            continue
        if len(met) == replayed:
            break
        met.add(origin)
    return duplicates


def test_in_exactly_once_mode_no_dlq_copy_repeats_after_a_crash(bootstrap_servers, topics, tmp_path):
    produce_orders(topics.orders, 200, "--seed", "6")
    args = consumer_args(
        topics, "--failure-rate", "1", "--max-attempts", "1", "--retry-backoff", "0", "--exactly-once"
    )
    log = tmp_path / "killed.log"
    killed = start_script("consumer", *args, stdout_path=log)
    wait_until(lambda: log.read_text().count("Moved to DLQ") >= 100, 60, "100 DLQ copies")
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    fail_everything(topics, "--exactly-once")
    dead = records(bootstrap_servers, topics.dlq)  # read_committed
    assert len(dead) == len(set(origins(dead))) == 200


def test_a_replay_the_original_topic_refuses_commits_nothing_and_runs_again_once_fixed(
    bootstrap_servers, topics
):
    """The original topic takes no record as large as an order now (max.message.bytes=10): the
    replay's transaction fails, is aborted, and the group's position stays; once the topic takes
    them again, a second replay sends each record once."""
    produce_orders(topics.orders, 3, "--seed", "5")
    fail_everything(topics)
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    set_topic_config(admin, topics.orders, "max.message.bytes", "10")
    group = f"{topics.group}-replay"
    failed = run_script("dlq", "replay", "--topic", topics.dlq, "--group-id", group)
    assert failed.returncode == 1, failed.stderr
    [line] = failed.stderr.splitlines()
    assert line.startswith(f"error: replaying {topics.dlq} [0] offset 0 to {topics.orders} failed: "), line
    assert line.endswith("; nothing was committed"), line
    assert committed_offset(bootstrap_servers, group, topics.dlq) == OFFSET_NONE
    assert len(records(bootstrap_servers, topics.orders)) == 3  # the aborted send is not read

    set_topic_config(admin, topics.orders, "max.message.bytes", "1048588")
    assert summary(replay(topics))["replayed"] == "3"
    assert [headers_of(m) for m in records(bootstrap_servers, topics.orders)[3:]] == [
        replayed_headers(topics)
    ] * 3
    assert committed_offset(bootstrap_servers, group, topics.dlq) == 3


REPLAY_STEPS = ["begin_transaction", "produce", "send_offsets_to_transaction", "commit_transaction"]


@pytest.mark.parametrize("step", REPLAY_STEPS)
def test_a_ctrl_c_after_each_step_of_a_replay_sends_each_record_back_once(
    bootstrap_servers, topics, monkeypatch, capsys, step
):
    """A second Ctrl-C raises KeyboardInterrupt wherever the replay is. Landing after each step of
    the second record's transaction in turn, the process ends with that transaction open (the
    broker aborts it) or committed; the next replay sends what was not committed, each record once."""
    produce_orders(topics.orders, 3, "--seed", "6")
    fail_everything(topics)
    calls = {name: 0 for name in REPLAY_STEPS}

    class InterruptedProducer(Producer):
        def interrupt_after(self, name: str) -> None:
            calls[name] += 1
            if name == step and calls[name] == 2:
                raise KeyboardInterrupt

    for name in REPLAY_STEPS:

        def step_then_interrupt(self, *args, _name=name, **kwargs):
            result = getattr(Producer, _name)(self, *args, **kwargs)
            self.interrupt_after(_name)
            return result

        setattr(InterruptedProducer, name, step_then_interrupt)
    monkeypatch.setattr(replay_module, "Producer", InterruptedProducer)
    group = f"{topics.group}-replay"
    args = dlq_producer.parse_args(
        ["replay", "--topic", topics.dlq, "--group-id", group, "--bootstrap-servers", bootstrap_servers]
    )
    with pytest.raises(KeyboardInterrupt):
        replay_module.replay(args, threading.Event())
    wait_until(  # the interrupted process's open transaction, aborted by the broker in time
        lambda: not partitions_with_open_transactions(bootstrap_servers, topics.orders), 60, "the abort"
    )
    committed = 2 if step == "commit_transaction" else 1
    assert committed_offset(bootstrap_servers, group, topics.dlq) == committed
    # A `Replayed` line is printed once its transaction has committed, never before (a review saw
    # 48 lines for 47 records after a kill): the first record's only, even when the interrupt lands
    # just after the second one's commit (committed, not yet said).
    assert capsys.readouterr().out.count("Replayed ") == 1

    replay(topics)
    replayed = records(bootstrap_servers, topics.orders)[3:]
    assert sorted(m.value() for m in replayed) == sorted(
        m.value() for m in records(bootstrap_servers, topics.orders)[:3]
    )
    assert all(headers_of(m) == replayed_headers(topics) for m in replayed)
    assert committed_offset(bootstrap_servers, group, topics.dlq) == 3


@pytest.mark.parametrize("mode", ["at-least-once", "exactly-once"])
def test_a_replayed_order_is_counted_by_the_group_that_dead_lettered_it_only(bootstrap_servers, topics, mode):
    """Replay writes back to the source topic, which every group reads: another group had counted
    those orders already (a review, following the README's steps 3, 5 and 6: an exactly-once
    group counted 100 orders of 60). It passes them over; the group that dead-lettered them counts them."""
    produce_orders(topics.orders, 60, "--seed", "21")
    first = run_script(
        "consumer",
        *consumer_args(
            topics,
            "--failure-rate",
            "0.8",
            "--seed",
            "1",
            "--retry-backoff",
            "0",
            "--idle-timeout",
            "3",
            "--quiet",
        ),
    )
    assert first.returncode == 0, first.stderr
    dead = int(summary(first)["dlq"])
    assert 0 < dead < 60
    assert summary(replay(topics))["replayed"] == str(dead)
    replayed = [m for m in records(bootstrap_servers, topics.orders) if m.offset() >= 60]
    assert {headers_of(m)["dlq.replay.group"] for m in replayed} == {topics.group}

    other = [*consumer_args(topics, "--failure-rate", "0", "--idle-timeout", "3"), "--group-id", "another"]
    if mode == "exactly-once":
        other += ["--exactly-once"]
    second = run_script("consumer", *other)
    assert second.returncode == 0, second.stderr
    assert summary(second)["processed"] == "60"  # each order once, not 60 + the replayed ones
    assert second.stdout.count("replayed for group") == dead
    again = run_script("consumer", *consumer_args(topics, "--failure-rate", "0", "--idle-timeout", "3"))
    assert summary(again)["processed"] == str(dead)  # the group that dead-lettered them counts them now
