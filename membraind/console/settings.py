"""The console's settings: ``[service.web]``."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from membraind.strict import StrictModel

__all__ = ["WebSettings", "DEFAULT_PORT"]

DEFAULT_PORT = 5580


class WebSettings(StrictModel):
    """The lab console (a web page) that ``membraind serve`` serves."""

    enabled: bool = Field(True, description="serve the lab console")
    listen: str = Field(
        f"127.0.0.1:{DEFAULT_PORT}",
        description="HOST:PORT to listen on; 127.0.0.1 is this machine only, 0.0.0.0 every network interface",
    )
    tls_certificate: Path | None = Field(None, description="PEM certificate file: serve https (with tls_key)")
    tls_key: Path | None = Field(None, description="PEM private key file of tls_certificate")
    public_url: str | None = Field(
        None, description="the address people open when it is not HOST:PORT (a reverse proxy's), e.g. "
        "https://membraind.lab.example.org/",
    )  # fmt: skip
    allowed_hosts: list[str] = Field(
        default_factory=list, description="more host names the console answers to (besides this machine's names)"
    )
    token_file: Path | None = Field(None, description="the access token's file (default: <home>/console-token)")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        match = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[^\s:\[\]]+):(\d{1,5})", value)
        if not match or not 0 < int(match.group(2)) < 65536:
            raise ValueError(f"{value!r} is not HOST:PORT; write e.g. 127.0.0.1:{DEFAULT_PORT} or 0.0.0.0:{DEFAULT_PORT}")
        return value

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError(f"{value!r} is not an http:// or https:// address")
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> "WebSettings":
        if (self.tls_certificate is None) != (self.tls_key is None):
            raise ValueError("https needs both tls_certificate and tls_key (PEM files), or neither")
        return self

    @property
    def host(self) -> str:
        """The host part of ``listen`` (brackets of an IPv6 address removed)."""
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        """The port part of ``listen``."""
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def scheme(self) -> str:
        """``https`` with a certificate, else ``http``."""
        return "https" if self.tls_certificate else "http"
