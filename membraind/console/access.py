"""Who may use the console: its access token, the link that carries it, and the checks
every request passes (token or cookie, Host header, same-origin forms).

The token is made at the daemon's first start and kept in a file only its owner can
read (0600, in the home folder); whoever has the link has the console, as with a
Jupyter server. Nothing here depends on the web framework.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import socket
from pathlib import Path
from urllib.parse import urlsplit

from membraind.console.settings import WebSettings
from membraind.errors import InputError

__all__ = [
    "TOKEN_FILE", "token_path", "read_or_create_token", "console_url", "console_url_for_home", "allowed_hosts",
    "host_allowed", "same_origin", "csrf_token", "cookie_name", "tokens_equal",
]  # fmt: skip

TOKEN_FILE = "console-token"


def token_path(home: Path, web: WebSettings) -> Path:
    """Where the access token is kept."""
    return web.token_file or Path(home) / TOKEN_FILE


def read_or_create_token(path: Path) -> str:
    """The token in ``path``, made (random, 0600) when there is none yet."""
    path = Path(path)
    try:
        token = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        token = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the console's access token {path} ({exc}); fix its permissions or delete it "
                         "(a new one is made at the next start)") from None  # fmt: skip
    if token:
        return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing empty file keeps its mode otherwise
        os.write(fd, token.encode("ascii") + b"\n")
    finally:
        os.close(fd)
    return token


def _base_url(web: WebSettings) -> str:
    if web.public_url:
        return web.public_url.rstrip("/") + "/"
    host = web.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn() or "localhost"  # listening everywhere: the name others reach this machine by
    elif ":" in host:
        host = f"[{host}]"
    return f"{web.scheme}://{host}:{web.port}/"


def console_url(home: Path, web: WebSettings) -> str:
    """The ready-to-open address of the console, token included (the token is made if needed)."""
    return f"{_base_url(web)}?token={read_or_create_token(token_path(home, web))}"


def console_url_for_home(home: Path, web: WebSettings | None = None) -> str:
    """The console's address for a daemon whose home folder is ``home`` (``web``: its
    ``[service.web]``, default settings when not given), for messages such as the demo's."""
    return console_url(Path(home), web or WebSettings())


def allowed_hosts(web: WebSettings) -> set[str]:
    """Host names (without port) the console answers to: DNS rebinding protection."""
    names = {"localhost", "127.0.0.1", "::1", web.host.lower()}
    if web.host in ("0.0.0.0", "::", ""):
        hostname = socket.gethostname()
        names |= {hostname.lower(), socket.getfqdn().lower()}
        try:
            names |= {info[4][0] for info in socket.getaddrinfo(hostname, None)}
        except OSError:
            pass
    if web.public_url:
        names.add((urlsplit(web.public_url).hostname or "").lower())
    names |= {h.lower() for h in web.allowed_hosts}
    return names - {""}


def host_allowed(host_header: str | None, allowed: set[str]) -> bool:
    """Whether a request's ``Host`` header names this console (``*`` in ``allowed``: any)."""
    if "*" in allowed:
        return True
    if not host_header:
        return False
    host = urlsplit(f"//{host_header}").hostname or ""
    return host.lower() in allowed


def same_origin(origin: str | None, referer: str | None, host_header: str | None) -> bool:
    """Whether a form post comes from a page of this console: its ``Origin`` (else ``Referer``)
    names the host the request was sent to. Browsers send one of them with every form post."""
    source = origin if origin and origin != "null" else referer
    if not source or not host_header:
        return False
    return urlsplit(source).netloc.lower() == host_header.lower()


def csrf_token(token: str) -> str:
    """The hidden field every console form carries (derived from the access token, so a
    page of another site, which cannot read this console's pages, cannot know it)."""
    return hmac.new(token.encode(), b"membraind-console-form", hashlib.sha256).hexdigest()[:32]


def tokens_equal(given: str | None, token: str) -> bool:
    """Constant-time comparison of a presented token with the real one."""
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())


def cookie_name(web: WebSettings) -> str:
    """The cookie's name, with the port in it: browsers share cookies between ports of one host."""
    return f"membraind_console_{web.port}"
