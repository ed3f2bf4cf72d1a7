"""VAST ``.vsvi`` descriptors: a lenient reader, a strict writer, and tile paths.

A ``.vsvi`` file makes VAST show a folder of image tiles as a layer (vast-protocol.md
section 5). Files found in the wild are JSON-like rather than JSON: VAST's own exports
hold unescaped single back-slashes in Windows paths, and mEMbrain's template used
typographic quotes. :func:`parse_vsvi` reads all of these; :func:`write_vsvi` writes what
VAST writes: cp1252 plain text with relative, back-slash templates.

Templates are printf-style paths with one ``%d`` placeholder per letter of the param
sequence (``s`` section, ``r`` tile row, ``c`` tile column, ``m`` mip; letters may
repeat). Relative templates are relative to the ``.vsvi`` file's folder; ``*`` and ``?``
wildcards in folder and file names are resolved against the files present.
"""

from __future__ import annotations

import bisect
import fnmatch
import json
import os
import re
from pathlib import Path
from threading import Lock
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator, model_validator

from membraind.atomic import write_text_atomic
from membraind.errors import InputError, describe_validation_error

__all__ = [
    "VsviDescriptor",
    "MissingPolicy",
    "parse_vsvi",
    "write_vsvi",
    "expand_template",
    "TilePaths",
]

MissingPolicy = Literal["black", "white", "nearest"]
DESCRIPTOR_ENCODING = "cp1252"  # VAST is a Windows program reading its files in the ANSI code page

# One printf integer placeholder (what MATLAB's sprintf and VAST accept), or an escaped %.
_PLACEHOLDER = re.compile(r"%(?:%|[-+ 0#]*\d*(?:\.\d+)?[diu])")
_TEMPLATE_KEYS = ("SourceFileNameTemplate", "MipMapFileNameTemplate")
_WINDOWS_ABSOLUTE = re.compile(r"^[A-Za-z]:[\\/]")
_WILDCARD = re.compile(r"[*?\[]")


class VsviDescriptor(BaseModel):
    """Every key of a ``.vsvi`` file (vast-protocol.md 5.1), named exactly as in the file.

    Only the mip-0 template and its param sequence are required; a missing
    ``TargetDataSize*`` (or 0) is derived from the tile ranges. Unknown keys are kept.
    """

    model_config = ConfigDict(extra="allow")

    Comment: str = ""
    ServerType: str = "imagetiles"
    SourceFileNameTemplate: str
    SourceParamSequence: str
    SourceMinS: int = 0
    SourceMaxS: int = 0
    SourceMinR: int = 0
    SourceMaxR: int = 0
    SourceMinC: int = 0
    SourceMaxC: int = 0
    MipMapFileNameTemplate: str = ""
    MipMapParamSequence: str = ""
    SourceMinM: int = Field(0, ge=0)  # 0/0: no mipmaps (public descriptors without a pyramid)
    SourceMaxM: int = Field(0, ge=0)
    SourceTileSizeX: int = Field(1024, gt=0)
    SourceTileSizeY: int = Field(1024, gt=0)
    SourceBytesPerPixel: Literal[1, 2, 3, 4] = 1
    MissingImagePolicy: MissingPolicy = "black"
    SourceSectionOrder: list[int] | None = None
    TargetDataSizeX: int = Field(0, ge=0)
    TargetDataSizeY: int = Field(0, ge=0)
    TargetDataSizeZ: int = Field(0, ge=0)
    OffsetX: int = 0
    OffsetY: int = 0
    OffsetZ: int = 0
    OffsetMip: int = 0
    TargetVoxelSizeXnm: float = Field(1.0, gt=0)
    TargetVoxelSizeYnm: float = Field(1.0, gt=0)
    TargetVoxelSizeZnm: float = Field(1.0, gt=0)
    TargetLayerName: str = ""

    @field_validator("MissingImagePolicy", "SourceParamSequence", "MipMapParamSequence", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("SourceSectionOrder", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        # VAST writes the order as one comma-separated text; JSON lists are accepted too.
        if isinstance(value, str):
            return [int(part) for part in re.split(r"[\s,;]+", value.strip()) if part] or None
        return value

    @field_serializer("SourceSectionOrder")
    def _write_comma_list(self, value: list[int] | None) -> str | None:
        return None if value is None else ",".join(str(v) for v in value)

    @model_validator(mode="after")
    def _consistent(self) -> "VsviDescriptor":
        _check_template("SourceFileNameTemplate", self.SourceFileNameTemplate, self.SourceParamSequence, "src")
        if self.MipMapFileNameTemplate:
            _check_template("MipMapFileNameTemplate", self.MipMapFileNameTemplate, self.MipMapParamSequence, "srcm")
        # Older writers leave the target size out; the tile ranges then define it.
        if not self.TargetDataSizeX:
            self.TargetDataSizeX = max(1, self.SourceMaxC - self.SourceMinC + 1) * self.SourceTileSizeX
        if not self.TargetDataSizeY:
            self.TargetDataSizeY = max(1, self.SourceMaxR - self.SourceMinR + 1) * self.SourceTileSizeY
        if not self.TargetDataSizeZ:
            self.TargetDataSizeZ = len(self.SourceSectionOrder or []) or max(1, self.SourceMaxS - self.SourceMinS + 1)
        return self

    @property
    def mip_levels(self) -> int:
        """Readable mip levels: ``SourceMaxM + 1`` with a mipmap template, else 1."""
        return self.SourceMaxM + 1 if self.MipMapFileNameTemplate and self.SourceMaxM >= 1 else 1

    def section_number(self, z: int) -> int:
        """The ``s`` value of section ``z`` (0-based position in the layer)."""
        if self.SourceSectionOrder:
            return self.SourceSectionOrder[z] if z < len(self.SourceSectionOrder) else -1
        return self.SourceMinS + z


def _check_template(key: str, template: str, sequence: str, letters: str) -> None:
    bad = sorted(set(sequence) - set(letters))
    if bad:
        raise ValueError(f"{key}'s param sequence '{sequence}' holds {bad}; only the letters '{letters}' are allowed")
    if "%" in _PLACEHOLDER.sub("", template):
        raise ValueError(f"{key} '{template}' holds a % that is not an integer placeholder such as %d or %06d")
    count = sum(1 for match in _PLACEHOLDER.finditer(template) if match.group() != "%%")
    if count != len(sequence):
        raise ValueError(
            f"{key} '{template}' has {count} placeholders but its param sequence '{sequence}' has "
            f"{len(sequence)} letters; give one letter per placeholder"
        )


def expand_template(template: str, sequence: str, *, s: int, r: int = 0, c: int = 0, m: int = 0) -> str:
    """``template`` with its placeholders filled from ``sequence`` (e.g. ``"ssrc"``)."""
    values = {"s": s, "r": r, "c": c, "m": m}
    return template % tuple(values[letter] for letter in sequence)


# ---------------------------------------------------------------------------------- reading


def parse_vsvi(path: Path) -> VsviDescriptor:
    """Read a ``.vsvi`` file, accepting what VAST and mEMbrain actually wrote.

    Accepted besides strict JSON: unescaped single back-slashes, typographic quotes,
    trailing commas, any key case. Raises :class:`InputError` naming the file and the
    line or key at fault.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f".vsvi file {path} does not exist")
    raw = _parse_object(_read_text(path), path)
    known = {name.lower(): name for name in VsviDescriptor.model_fields}
    raw = {known.get(key.lower(), key): value for key, value in raw.items()}
    try:
        return VsviDescriptor.model_validate(raw)
    except ValidationError as exc:
        raise InputError(f"{path}: {describe_validation_error(exc)}; correct these keys in the .vsvi file") from None


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read .vsvi file {path} ({exc.strerror or exc}); check its permissions") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")  # Windows editors; has the curly quotes


def _parse_object(text: str, path: Path) -> dict[str, Any]:
    text = text.translate(_QUOTES)
    # Strict JSON first; then the same text with every back-slash literal (VAST's exports).
    for candidate in (text, text.replace("\\", "\\\\")):
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and not _garbled(data):
            return data
    return _parse_pairs(text, path)


_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
                         "\u2018": "'", "\u2019": "'"})  # fmt: skip


def _garbled(data: dict[str, Any]) -> bool:
    # "C:\new\tiles" is valid JSON, but \n and \t were meant as folder separators.
    return any(
        isinstance(value, str) and re.search(r"[\x00-\x1f]", value) for key, value in data.items() if key != "Comment"
    )


# One "Key": value pair; text values are taken literally (no escapes), bare values run to
# the next comma, brace or line end.
_SHAPE_HINT = 'a .vsvi file is a JSON object such as {"ServerType": "imagetiles", ...}'
_PAIR = re.compile(r'"?([A-Za-z_]\w*)"?[ \t]*:[ \t]*("[^"\n]*"|[^,}"\n]*)[ \t]*')


def _parse_pairs(text: str, path: Path) -> dict[str, Any]:
    """Every ``"Key": value`` pair in order (the last resort: back-slashes literal,
    trailing commas and several pairs per line allowed)."""
    data: dict[str, Any] = {}
    body = text.strip().removeprefix("{").removesuffix("}")
    offset = len(text) - len(text.lstrip()) + (1 if text.lstrip().startswith("{") else 0)
    pos = 0
    while True:
        while pos < len(body) and (body[pos].isspace() or body[pos] == ","):
            pos += 1
        if pos == len(body):
            break
        match = _PAIR.match(body, pos)
        number = text.count("\n", 0, offset + pos) + 1
        if not match:
            line = text.splitlines()[number - 1].strip()
            raise InputError(
                f"{path}, line {number}: cannot read {line!r} as \"Key\": value pairs; {_SHAPE_HINT}"
            )
        key, value = match.groups()
        data[key] = _pair_value(value.strip(), key, number, path)
        pos = match.end()
    if not data:
        raise InputError(f"{path} holds no keys; {_SHAPE_HINT}")
    return data


def _pair_value(value: str, key: str, number: int, path: Path) -> Any:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    words = {"true": True, "false": False, "null": None}
    if value.lower() in words:
        return words[value.lower()]
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    raise InputError(
        f"{path}, line {number}: the value of {key} ({value}) is neither a number nor a \"quoted\" text; "
        "put text values in double quotes"
    )


# ---------------------------------------------------------------------------------- writing


def write_vsvi(path: Path, descriptor: VsviDescriptor) -> Path:
    """Write ``descriptor`` to ``path`` as VAST writes its own descriptors, atomically.

    VAST is a Windows program that reads descriptors literally: templates are written
    relative to the file's folder with bare back-slashes (``.\\mip0\\...``), so the tile
    store can be moved or shared as a whole and opened from Windows; text is plain cp1252
    (no ``\\uXXXX`` escapes; a character cp1252 lacks becomes ``?``, a double quote a
    single one). :func:`parse_vsvi` reads it back.
    """
    path = Path(path)
    data = descriptor.model_dump(mode="json", exclude_none=True)
    for key in _TEMPLATE_KEYS:
        if data.get(key):
            data[key] = _portable_template(data[key], path.parent).replace("/", "\\")
    body = ",\n".join(f'  "{key}": {_literal(value)}' for key, value in data.items())
    return write_text_atomic(path, "{\n" + body + "\n}\n", DESCRIPTOR_ENCODING, "replace")


def _literal(value: Any) -> str:
    """A value as VAST reads it: numbers and booleans as in JSON, text quoted and taken literally."""
    if isinstance(value, str):
        return '"' + re.sub(r"[\x00-\x1f]", " ", value).replace('"', "'") + '"'
    return json.dumps(value)


def _portable_template(template: str, folder: Path) -> str:
    template = template.replace("\\", "/")
    if _WINDOWS_ABSOLUTE.match(template):
        return template  # another machine's drive; nothing to be relative to here
    if os.path.isabs(template):
        template = os.path.relpath(template, folder.resolve()).replace(os.sep, "/")
    return template if template.startswith(("./", "../")) else "./" + template


# ---------------------------------------------------------------------------------- tile paths


class TilePaths:
    """Tile file paths of one descriptor, wildcards resolved against the files present.

    Folder listings and wildcard matches are cached, so resolving thousands of tiles
    lists each folder once; call :meth:`clear_cache` after tiles were added.
    """

    def __init__(self, descriptor: VsviDescriptor, vsvi_path: Path) -> None:
        self.descriptor = descriptor
        self.folder = Path(vsvi_path).parent
        if os.name != "nt":
            for key in _TEMPLATE_KEYS:
                if _WINDOWS_ABSOLUTE.match(getattr(descriptor, key)):
                    raise InputError(
                        f"{vsvi_path}: {key} is the Windows path '{getattr(descriptor, key)}', which this machine "
                        "cannot open; copy the tiles here and make the template relative to the .vsvi file "
                        "(e.g. ./mip0/...)"
                    )
        self._listings: dict[Path, list[str]] = {}
        self._matches: dict[tuple[Path, str], Path | None] = {}
        self._lock = Lock()

    def path(self, s: int, r: int, c: int, m: int = 0) -> Path | None:
        """The file of tile (section ``s``, row ``r``, column ``c``) at mip ``m``, as numbered
        in the templates; None when a wildcard matches no file."""
        d = self.descriptor
        if m == 0:
            text = expand_template(d.SourceFileNameTemplate, d.SourceParamSequence, s=s, r=r, c=c)
        else:
            text = expand_template(d.MipMapFileNameTemplate, d.MipMapParamSequence, s=s, r=r, c=c, m=m)
        return self.resolve(text)

    def resolve(self, text: str) -> Path | None:
        """A template-expanded path made local: back-slashes to slashes, relative to the
        ``.vsvi`` folder, wildcards matched (first match in name order)."""
        path = self.folder / text.replace("\\", "/")
        if not _WILDCARD.search(str(path)):
            return path
        parts = path.parts
        current = Path(parts[0])
        for part in parts[1:]:
            if _WILDCARD.search(part):
                match = self._match(current, part)
                if match is None:
                    return None
                current = match
            else:
                current = current / part
        return current

    def clear_cache(self) -> None:
        """Forget folder listings (after tiles were added or removed)."""
        with self._lock:
            self._listings.clear()
            self._matches.clear()

    def _match(self, folder: Path, pattern: str) -> Path | None:
        key = (folder, pattern)
        with self._lock:
            if key in self._matches:
                return self._matches[key]
            names = self._listings.get(folder)
        if names is None:
            try:
                names = sorted(entry.name for entry in os.scandir(folder))
            except OSError:
                names = []
        # Only names sharing the pattern's literal prefix can match; they sit together in
        # the sorted listing, so a section's tiles are found without scanning the folder.
        prefix = _WILDCARD.split(pattern, 1)[0]
        start = bisect.bisect_left(names, prefix)
        found = None
        for name in names[start:]:
            if not name.startswith(prefix):
                break
            if fnmatch.fnmatchcase(name, pattern):
                found = folder / name
                break
        with self._lock:
            self._listings[folder] = names
            self._matches[key] = found
        return found
