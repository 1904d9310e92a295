"""The exceptions every layer may raise for a mistake the user can fix, and the exit code of each."""


class UserError(Exception):
    """A mistake the user can fix (bad flag, broker down, missing topic): one line, no traceback."""

    exit_code = 1


class InvalidInputError(UserError):
    """A bad input file (--config, --schema): refused before any work, like a bad flag, so with
    argparse's exit code."""

    exit_code = 2


def where_not_utf8(exc: UnicodeDecodeError) -> str:
    """Where a file stops being UTF-8, for people: the line and the offending byte, nothing else."""
    line = exc.object.count(b"\n", 0, exc.start) + 1
    return f"line {line}, byte 0x{exc.object[exc.start]:02x}"
