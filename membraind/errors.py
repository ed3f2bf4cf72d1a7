"""User-facing errors, and the one way validation failures are worded.

Anything raised as a :class:`MembraindError` is a problem with the user's input or
setup. Its message must say what is wrong (naming the file, field or value) and what
to do; the CLI prints it as one line without a traceback, and the daemon records it on
the job and keeps running.

:class:`Cancelled` stands apart (as huey's ``CancelExecution`` does): stopping because
someone asked is not an error, and the daemon records the job as cancelled, not failed.
"""


class MembraindError(Exception):
    """An error caused by input or configuration, with a message meant for the user."""


class InputError(MembraindError):
    """A file, folder or value given by the user cannot be used as it is."""


class ConfigError(MembraindError):
    """The configuration file or environment holds an invalid setting."""


class Cancelled(Exception):
    """Work stopped because cancelling was asked for (a cancel, or the daemon stopping);
    what was finished is kept. Not a :class:`MembraindError`: nothing was wrong."""


def describe_validation_error(exc: Exception) -> str:
    """Every problem of a pydantic ``ValidationError`` as ``field: message``, joined by '; '."""
    parts = []
    for item in exc.errors():  # type: ignore[attr-defined]
        # union branches add pydantic's schema names ("function-after[path_validator(), str]") to the location
        field = ".".join(str(part) for part in item["loc"] if not (isinstance(part, str) and "[" in part))
        message = item["msg"].replace("Input is not a valid path for <class 'pathlib.Path'>", "expected a path (text)")
        part = f"{field}: {message}" if field else message  # no loc: a cross-field check
        if part not in parts:
            parts.append(part)
    return "; ".join(parts)
