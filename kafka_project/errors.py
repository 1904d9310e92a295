"""The one exception every layer may raise for a mistake the user can fix."""


class UserError(Exception):
    """A mistake the user can fix (bad flag, broker down, missing topic): one line, no traceback."""
