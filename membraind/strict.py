"""The one strict base for membraind's pydantic models: unknown fields are errors.

Settings, request specs and files membraind reads all reject keys they do not know, so
a typo fails loudly instead of silently falling back to a default. Models that need more
(``frozen``, ``strict``) add it in their own ``model_config``; pydantic merges it with
this one.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    """A pydantic model that rejects unknown fields (``extra="forbid"``)."""

    model_config = ConfigDict(extra="forbid")
