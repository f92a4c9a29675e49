"""The one error type that means "the user's input or environment is wrong"."""


class TuwenError(Exception):
    """An error caused by the user's input or environment; its message is shown as is."""
