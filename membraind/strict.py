"""The one strict base for membraind's pydantic models: unknown fields are errors.

Settings, request specs and files membraind reads all reject keys they do not know, so
a typo fails loudly instead of silently falling back to a default. Models that need more
(``frozen``, ``strict``) add it in their own ``model_config``; pydantic merges it with
this one. A key that was renamed keeps being read under its older name
(:func:`accept_older_name`), so configuration files written for older versions work.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel", "accept_older_name"]


class StrictModel(BaseModel):
    """A pydantic model that rejects unknown fields (``extra="forbid"``)."""

    model_config = ConfigDict(extra="forbid")


def accept_older_name(data: Any, name: str, older: str) -> Any:
    """``data`` (a model's raw input) with the key ``older`` read as ``name``; for a
    ``mode="before"`` model validator.

    Both may be set (a file and the environment can each set one) only to the same value:
    which one should win would be a guess.
    """
    if not isinstance(data, dict) or older not in data:
        return data
    data = dict(data)
    value = data.pop(older)
    if name in data and str(data[name]) != str(value):  # the environment gives text: "5" and 5 agree
        raise ValueError(f"{name} ({data[name]!r}) and {older}, its older name ({value!r}), disagree; set only {name}")
    data[name] = value
    return data
