"""CurveZMQ keys: generating key pairs and reading the certificate files.

Key files are ZeroMQ certificates as written by ``zmq.auth.create_certificates``:
``NAME.key`` holds the public key (safe to copy around), ``NAME.key_secret`` the key
pair (keep it private). The daemon admits the clients whose ``.key`` files lie in its
``authorized_keys`` folder; a client needs its own ``.key_secret`` and the server's ``.key``.
"""

from __future__ import annotations

import os
from pathlib import Path

import zmq.auth

__all__ = ["KeyFileError", "generate_keys", "load_public_key", "load_key_pair"]


class KeyFileError(ValueError):
    """A key file that is missing or not a ZeroMQ certificate."""


def generate_keys(folder: Path, name: str) -> tuple[Path, Path]:
    """Write ``folder/NAME.key`` (public) and ``folder/NAME.key_secret`` (private, mode 600)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = (folder / f"{name}.key"), (folder / f"{name}.key_secret")
    for path in (public, secret):
        if path.exists():
            raise KeyFileError(f"{path} exists already; remove it first or choose another name")
    public_file, secret_file = zmq.auth.create_certificates(str(folder), name)
    os.chmod(secret_file, 0o600)
    return Path(public_file), Path(secret_file)


def _load(path: Path) -> tuple[bytes, bytes | None]:
    try:
        return zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc}; make one with `membraind-client keygen`") from None


def load_public_key(path: Path) -> bytes:
    """The public key (z85) in a ``.key`` or ``.key_secret`` file."""
    return _load(path)[0]


def load_key_pair(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) from a ``.key_secret`` file."""
    public, secret = _load(path)
    if not secret:
        raise KeyFileError(f"{path} holds no secret key; give the .key_secret file, not the public .key")
    return public, secret
