"""User-facing errors.

Anything raised as a :class:`MembraindError` is a problem with the user's input or
setup. Its message must say what is wrong (naming the file, field or value) and what
to do; the CLI prints it as one line without a traceback, and the daemon records it on
the job and keeps running.
"""


class MembraindError(Exception):
    """An error caused by input or configuration, with a message meant for the user."""


class InputError(MembraindError):
    """A file, folder or value given by the user cannot be used as it is."""


class ConfigError(MembraindError):
    """The configuration file or environment holds an invalid setting."""
