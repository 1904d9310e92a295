"""End-to-end latency: from a record's timestamp to the moment the running average includes it."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid

from confluent_kafka import Consumer, Message, Producer

from bench.common import REPO, Broker, percentile
from kafka_project.consumer.consumer import consume_until_stopped, consumer_config
from kafka_project.consumer.consumer import parse_args as consumer_args
from kafka_project.consumer.processor import AtLeastOnceProcessor
from kafka_project.consumer.schedule import Work
from kafka_project.dlq.dlq_producer import DeadLetterPublisher, dlq_producer_config
from kafka_project.order_codec import OrderCodec

codec = OrderCodec()
STARTUP_S = 1.0  # the producer's first second: its process start and its producer id


def latency(broker: Broker, rate: int, seconds: float, failure_rate: float) -> dict[str, float]:
    """The default consumer in this process, the project's producer at a steady `rate`; orders that
    end in the DLQ have no such moment and are left out.

    One order goes through first, uncounted: the broker can hold the very first fetch of a brand-new
    topic for all of fetch.wait.max.ms (500 ms) while records arrive (seen in librdkafka's fetch
    debug log: FetchResponse rtt 504.75 ms, _PARTITION_EOF, then 493 records at once). That is a
    once-per-topic start-up cost, not the steady state this row measures.

    Orders the producer creates in its first second are timed apart (`startup_max`), for the same
    reason: a new idempotent producer can hold its first records for librdkafka's 500 ms producer-id
    timer (its eos debug log: "No brokers available for Idempotent producer", "Starting PID FSM
    timer: Coordinator not up" as the bootstrap connection is replaced, the broker up 44 ms later,
    "Acquiring ProducerId" only at 497 ms). That is once per producer process, not steady state."""
    topic, count = broker.topic(f"latency-{rate}"), int(rate * seconds)
    latencies: list[tuple[float, float]] = []  # (created, latency) in ms
    failed: list[str] = []
    done = threading.Event()
    args = consumer_args(
        [
            "--bootstrap-servers",
            broker.bootstrap,
            "--topic",
            topic,
            "--failure-rate",
            str(failure_rate),
            "--quiet",
            "--group-id",
            f"bench-{uuid.uuid4().hex[:6]}",
        ]
    )

    class TimedProcessor(AtLeastOnceProcessor):
        def count(self, work: Work) -> None:
            super().count(work)
            created = work.msg.timestamp()[1]
            latencies.append((created, time.time() * 1000 - created))

        def dead_letter(self, msg: Message, error: Exception, attempts: int, label: str) -> None:
            super().dead_letter(msg, error, attempts, label)
            failed.append(label)  # the acknowledgement may come after the last order: count the send

    consumer = Consumer(consumer_config(broker.bootstrap, args.group_id))
    dlq = DeadLetterPublisher(
        Producer(dlq_producer_config(broker.bootstrap)), broker.topic("dlq"), args.group_id
    )
    processor = TimedProcessor(consumer, dlq, codec, args)
    processor.after_each_record = lambda: done.set() if len(latencies) + len(failed) >= count else None
    consumer.subscribe([topic], on_assign=processor.on_assign, on_revoke=processor.on_revoke)
    while not consumer.assignment():
        consumer.poll(0.1)
    worker = threading.Thread(target=consume_until_stopped, args=(consumer, processor, args, done))
    worker.start()
    subprocess.run(broker.producer_command(topic, 1), check=True, cwd=REPO, capture_output=True)
    warmed_up = time.monotonic() + 60
    while not (latencies or failed) and time.monotonic() < warmed_up:
        time.sleep(0.01)
    latencies.clear()
    failed.clear()
    steady_from = (time.time() + min(STARTUP_S, seconds / 2)) * 1000  # --quick runs last 1 s
    started = time.perf_counter()
    subprocess.run(broker.producer_command(topic, count, 1 / rate), check=True, cwd=REPO, capture_output=True)
    achieved = count / (time.perf_counter() - started)
    done.wait(60)
    done.set()
    worker.join()
    consumer.close()
    steady = sorted(latency for created, latency in latencies if created >= steady_from)
    return {
        "p50": percentile(steady, 50),
        "p99": percentile(steady, 99),
        "max": steady[-1],
        "startup_max": max((latency for created, latency in latencies if created < steady_from), default=0.0),
        "achieved_rate": round(achieved),
    }
