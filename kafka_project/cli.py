"""What every script shares: flags backed by environment variables, Ctrl-C handling, one-line errors."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from kafka_project import cluster
from kafka_project.errors import InvalidInputError, UserError, where_not_utf8
from kafka_project.order_codec import SCHEMA_PATH, OrderCodec
from kafka_project.registry import RegistryUnavailableError, SchemaRegistry, split_registry_properties
from kafka_project.watchdog import quit_on_third_ctrl_c

__all__ = ["UserError"]


DEFAULT_BOOTSTRAP_SERVERS = "localhost:9092"
EXIT_STDOUT_CLOSED = 141  # 128 + SIGPIPE (13): what a shell reports for `yes | head -1`
Number = TypeVar("Number", int, float)
Default = TypeVar("Default")


def env_default(name: str, default: Default) -> str | Default:
    return os.environ.get(name) or default


def add_env_flag(parser: argparse.ArgumentParser, flag: str, env: str, default: str, what: str) -> None:
    """A flag whose default comes from an environment variable, and whose help says so."""
    parser.add_argument(
        flag, default=env_default(env, default), help=f"{what} (env {env}; default %(default)s)"
    )


def make_parser(doc: str | None, common_args: bool = True) -> argparse.ArgumentParser:
    """A parser whose --help is the script's docstring, with the shared flags unless told otherwise."""
    summary, _, details = (doc or "").strip().partition("\n")
    parser = argparse.ArgumentParser(
        description=summary,
        epilog=details.strip() or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return add_common_args(parser) if common_args else parser


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--bootstrap-servers, --config and --schema, each backed by an environment variable."""
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        default=env_default("KAFKA_BOOTSTRAP_SERVERS", None),
        help="Kafka brokers (env KAFKA_BOOTSTRAP_SERVERS, else bootstrap.servers from --config; "
        f"default {DEFAULT_BOOTSTRAP_SERVERS})",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=env_default("KAFKA_CONFIG", None),
        metavar="FILE",
        help="librdkafka properties (key=value lines, e.g. security.protocol, sasl.username) merged "
        "into every client's settings (env KAFKA_CONFIG)",
    )
    parser.add_argument(
        "--schema",
        type=Path,
        default=Path(env_default("ORDER_SCHEMA", str(SCHEMA_PATH))),
        help="Avro schema of an order (env ORDER_SCHEMA; default: the packaged order.avsc)",
    )
    parser.add_argument(
        "--schema-registry",
        metavar="URL",
        default=env_default("SCHEMA_REGISTRY_URL", None),
        help="Schema Registry (Confluent API) for its wire format (env SCHEMA_REGISTRY_URL, else "
        "schema.registry.url from --config, whose schema.registry.* and basic.auth.* settings go to "
        "the registry client; default: none, single-object encoding only)",
    )
    return parser


def add_wait_for_topics_flag(
    parser: argparse.ArgumentParser, default: float | None, default_text: str
) -> None:
    env = env_default("WAIT_FOR_TOPICS", None)
    parser.add_argument(
        "--wait-for-topics",
        type=seconds,
        default=default if env is None else env,  # argparse converts a string default with `type`
        metavar="SECONDS",
        help="when a topic is missing, wait this long for it to be created, then exit with an error; "
        f"0 = exit at once (env WAIT_FOR_TOPICS; default: {default_text})",
    )


def load_properties(path: Path) -> dict[str, str]:
    """A librdkafka properties file, as Confluent's examples use: key=value lines, # comments."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        name = property_name_around(data, exc.start)
        where = where_not_utf8(exc) + (f", in {name}" if name else "")
        raise InvalidInputError(f"config file {path} is not UTF-8 ({where})") from None
    properties = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, separator, value = line.partition("=")
        if not separator or not key.strip():
            raise InvalidInputError(f"{path}:{number}: expected key=value")
        properties[key.strip()] = value.strip()
    return properties


def property_name_around(data: bytes, position: int) -> str | None:
    """The property named on the line holding `position`: its name only, as its value may be a secret."""
    line = data[data.rfind(b"\n", 0, position) + 1 :].split(b"\n", 1)[0]
    name, separator, _ = line.partition(b"=")
    return name.decode("utf-8", errors="replace").strip() if separator else None


def parse_with_connection(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, then settle where to connect: the flag or env var, else the config file, else localhost.
    The file's other settings go into every client this process creates; they are never printed,
    and a file librdkafka refuses is an InvalidInputError here, before any work starts."""
    args = parser.parse_args(argv)
    config_file = getattr(args, "config", None)
    properties = load_properties(config_file) if config_file else {}
    registry_settings = split_registry_properties(properties)  # librdkafka would refuse them
    if hasattr(args, "schema_registry"):
        file_url = registry_settings.pop("url", None)
        args.schema_registry = args.schema_registry or (str(file_url) if file_url is not None else None)
        args.registry_settings = registry_settings
    file_servers = properties.pop("bootstrap.servers", None)
    if hasattr(args, "bootstrap_servers"):
        args.bootstrap_servers = args.bootstrap_servers or file_servers or DEFAULT_BOOTSTRAP_SERVERS
    cluster.use_client_properties(properties)
    if config_file:
        cluster.check_client_properties(config_file)
    return args


def order_codec(args: argparse.Namespace, produce_to: str | None = None) -> OrderCodec:
    """The codec the flags ask for. It reads both wire formats (the registry's needs
    --schema-registry); given `produce_to`, it writes the registry's format to that topic's
    subject when there is a registry, else single-object encoding."""
    schema_registry = (
        SchemaRegistry(args.schema_registry, args.registry_settings) if args.schema_registry else None
    )
    if schema_registry is not None:
        schema_registry.check()  # a wrong URL is one line now, not every record dead-lettered later
    codec = OrderCodec(args.schema, schema_registry)
    if produce_to is not None and schema_registry is not None:
        try:
            codec.write_registry_format(produce_to, use_latest=getattr(args, "use_latest_schema", False))
        except RegistryUnavailableError as exc:
            raise UserError(str(exc)) from None
    return codec


def checked(
    kind: Callable[[str], Number], is_valid: Callable[[Number], bool], complaint: str
) -> Callable[[str], Number]:
    """An argparse type: `kind` of the text, refused with "<text> <complaint>" unless is_valid."""

    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not is_valid(value):
            raise argparse.ArgumentTypeError(f"{text} {complaint}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse


def non_negative(kind: Callable[[str], Number]) -> Callable[[str], Number]:
    return checked(kind, lambda value: value >= 0, "is negative")


# Any time a flag gives: a day at most (time.sleep() refuses some larger ones; inf is no time).
MAX_SECONDS = 86_400.0


def seconds(text: str) -> float:
    """An argparse type for a time in seconds: 0 to MAX_SECONDS."""
    value = checked(float, lambda number: not math.isnan(number), "is not a number")(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text} is not a time of at most {MAX_SECONDS:.0f} s (a day)")
    return value


fraction = checked(float, lambda value: 0.0 <= value <= 1.0, "is not between 0 and 1")
positive_float = checked(float, lambda value: value > 0, "is not a positive number")
positive_int = checked(int, lambda value: value >= 1, "is not a positive whole number")
port_number = checked(int, lambda value: 1 <= value <= 65535, "is not a port number (1-65535)")


def stop_on_signals() -> threading.Event:
    """The first Ctrl-C or SIGTERM asks for a clean stop. A second (of either) stops the work at once
    (KeyboardInterrupt) but still lets what is done be committed; a third quits on the spot."""
    stop = threading.Event()

    def interrupt(_signum: int, _frame: object) -> None:
        print("stopping now (Ctrl-C again to quit without waiting)", file=sys.stderr)
        raise KeyboardInterrupt

    def request_stop(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGINT, interrupt)  # first: a second Ctrl-C must not come back here
        signal.signal(signal.SIGTERM, interrupt)  # nor a second SIGTERM (a supervisor's, say)
        # Handlers run on the main thread, which may be inside stop.wait() holding the Event's
        # lock (not reentrant): set() here could wait for it forever. Another thread can.
        threading.Thread(target=stop.set, daemon=True).start()
        print(
            f"\n{signal.Signals(signum).name}: finishing up (Ctrl-C again to quit at once)", file=sys.stderr
        )

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    quit_on_third_ctrl_c()
    return stop


def run(main: Callable[[], int | None]) -> None:
    """Run a script's main: user mistakes become one line on stderr, never a stack trace; a closed
    stdout (`... | head`) ends it as it ends a Unix tool."""
    try:
        exit_code = main() or 0
        sys.stdout.flush()  # here, not at exit, where a closed stdout could only be reported as ignored
        sys.exit(exit_code)
    except UserError as exc:  # InvalidInputError (a bad file, like a bad flag) exits 2, as argparse does
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        silence_stdout()
        print("stopped: stdout was closed", file=sys.stderr)
        sys.exit(EXIT_STDOUT_CLOSED)
    except KeyboardInterrupt:
        sys.exit(130)


def silence_stdout() -> None:
    """After a closed stdout (`... | head`): send further output to /dev/null, so that neither our
    last lines nor Python's flush at exit raise BrokenPipeError again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
