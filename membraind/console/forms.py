"""New-job forms built from the job spec models (:mod:`membraind.jobs.specs`).

A form shows one input per field of a spec model, labelled and explained by the field's
own description; what a person types goes back into the request dict a request file
would hold, and the same models validate it. Each validation error is put next to the
field it names. No web framework here: the app renders :class:`JobForm` and hands the
posted fields to :func:`request_from_form`.
"""

from __future__ import annotations

import enum
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

from pydantic import BaseModel, ValidationError

from membraind.jobs.specs import SPEC_TYPES, parse_spec

__all__ = [
    "FormField", "JobForm", "FORM_KINDS", "TRANSFER_MODES", "job_form", "request_from_form", "field_errors",
    "split_problems",
]  # fmt: skip

# The transfer modes, one line each (docs/user-guide.md, "Fine-tuning").
TRANSFER_MODES = {
    "continue": "everything learns on, at the usual rate (the default)",
    "freeze-all-but-last": "only the final classifier learns; for a little new data close to the old",
    "freeze-encoder": "the decoder and classifier learn; the down path stays as it was",
    "leaky": "everything learns, the down path at leaky factor x the rate (0.1: it changes slowly)",
    "episodic": "everything learns, and every batch mixes in the parent's own training data, so it does not forget",
}
KIND_TITLES = {
    "train": "Train a new network", "finetune": "Fine-tune a network", "predict": "Predict membranes",
    "segment2d": "Cut sections into cells (2D segmentation)", "export-onnx": "Export a model to ONNX",
    "evaluate": "Evaluate a model on sample images",
}  # fmt: skip
TARGET_MODES = {
    "volume": "the whole volume",
    "box": "a box: sections and a rectangle",
    "anchors": "cubes around points (x y z, one per line)",
    "image": "one image file",
}
BOX_FIELDS = ("x0", "x1", "y0", "y1", "z0", "z1", "mip")
ANCHOR_FIELDS = ("points", "cube_xy", "cube_z")
FORM_KINDS = {spec.model_fields["kind"].default: spec for spec in SPEC_TYPES}


@dataclass
class FormField:
    """One input of a form."""

    name: str
    label: str
    widget: str  # text, number, checkbox, select, lines, checks, target
    help: str = ""
    required: bool = False
    choices: list[tuple[str, str]] = field(default_factory=list)  # (value, what it means)
    value: Any = ""  # text, a bool (checkbox), a list (checks), a dict (target)
    error: str = ""


@dataclass
class JobForm:
    """A job kind's form: its fields (with values and errors) and errors about the whole request."""

    kind: str
    title: str
    doc: str
    fields: list[FormField]
    errors: list[str] = field(default_factory=list)

    def field(self, name: str) -> FormField | None:
        """The field called ``name``."""
        return next((f for f in self.fields if f.name == name), None)


def _plain(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without None, whether None is allowed)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True
    return annotation, False


def _literal_values(annotation: Any) -> list[str] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return [str(v) for v in typing.get_args(annotation)]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(m.value) for m in annotation]
    return None


def _widget(name: str, annotation: Any) -> tuple[str, list[tuple[str, str]]]:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if name == "target":
        return "target", [(mode, text) for mode, text in TARGET_MODES.items()]
    if name == "mode" and _literal_values(annotation) == list(TRANSFER_MODES):
        return "select", list(TRANSFER_MODES.items())
    values = _literal_values(annotation)
    if values is not None:
        return "select", [(v, "") for v in values]
    if annotation is bool:
        return "checkbox", []
    if annotation in (int, float):
        return "number", []
    origin = typing.get_origin(annotation)
    if origin is list:
        (item,) = typing.get_args(annotation) or (str,)
        values = _literal_values(item)
        return ("checks", [(v, "") for v in values]) if values is not None else ("lines", [])
    return "text", []  # paths, names, and "a, b, c" for tuples


def _help(name: str, info: Any, widget: str) -> str:
    text = info.description or ""
    if name == "volume":
        text += "; a VAST layer as vast://HOST:PORT/LAYER"
    if widget == "lines":
        text += " (one per line)"
    elif widget == "text" and typing.get_origin(_plain(info.annotation)[0]) is tuple:
        text += " (numbers separated by commas)"
    return text.strip("; ")


def job_form(kind: str, values: Mapping[str, Any] | None = None) -> JobForm:
    """The empty form for ``kind`` (KeyError when there is no such kind), with ``values``
    (a request dict, e.g. from a link's query: ``models``, ``parent``, ``bundle``) filled in."""
    spec = FORM_KINDS[kind]
    values = dict(values or {})
    fields = []
    for name, info in spec.model_fields.items():
        if name == "kind":
            continue
        annotation, optional = _plain(info.annotation)
        widget, choices = _widget(name, annotation)
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        given = values.get(name, default)
        if widget == "checkbox":
            value: Any = bool(given)
        elif widget == "checks":
            value = [str(v) for v in given or []]
        elif widget == "lines":
            value = "\n".join(str(v) for v in given or [])
        elif widget == "target":
            value = _target_value(given)
        elif isinstance(given, (list, tuple)):
            value = ", ".join(str(v) for v in given)
        elif isinstance(given, dict):
            value = _vast_address(given)
        else:
            value = "" if given is None else str(given)
        if widget == "select" and optional:
            choices = [("", "default (from the configuration)")] + choices
        fields.append(FormField(name=name, label=name.replace("_", " "), widget=widget, help=_help(name, info, widget),
                                required=info.is_required(), choices=choices, value=value))  # fmt: skip
    doc = (spec.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ").replace("``", "")
    return JobForm(kind=kind, title=KIND_TITLES.get(kind, kind), doc=doc, fields=fields)


def _target_value(given: Any) -> dict[str, str]:
    target = given.model_dump() if isinstance(given, BaseModel) else dict(given or {})
    value = {"mode": str(target.get("mode", "volume"))}
    for key, item in (target.get("box") or {}).items():
        value[f"box.{key}"] = str(item)
    if target.get("points"):
        value["points"] = "\n".join(f"{p['x']} {p['y']} {p['z']}" for p in target["points"])
    for key in ("cube_xy", "cube_z", "root"):
        if target.get(key) is not None:
            value[key] = str(target[key])
    return value


def _vast_address(source: dict) -> str:
    return f"vast://{source.get('host', '127.0.0.1')}:{source.get('port', '')}/{source.get('layer', 0)}"


def request_from_form(kind: str, posted: Mapping[str, str]) -> dict[str, Any]:
    """The request dict the posted fields of ``kind``'s form describe (empty inputs: left out,
    so the configuration's value applies). The spec models validate it afterwards."""
    form = job_form(kind)
    data: dict[str, Any] = {"kind": kind}
    for f in form.fields:
        if f.widget == "checkbox":
            data[f.name] = posted.get(f.name) == "on"  # an unticked box is not posted at all
            continue
        if f.widget == "checks":
            ticked = [v for v, _ in f.choices if posted.get(f"{f.name}.{v}") == "on"]
            if ticked:
                data[f.name] = ticked
            continue
        if f.widget == "target":
            data[f.name] = _target_from_form(posted)
            continue
        text = (posted.get(f.name) or "").strip()
        if not text:
            continue
        if f.widget == "lines":
            data[f.name] = [line.strip() for line in text.splitlines() if line.strip()]
        elif f.name == "volume" and text.lower().startswith("vast://"):
            data[f.name] = _vast_source(text)
        elif "(numbers separated by commas)" in f.help:
            data[f.name] = [part for part in re.split(r"[,\s]+", text) if part]
        else:
            data[f.name] = text
    return data


def _vast_source(text: str) -> dict[str, Any] | str:
    match = re.fullmatch(r"vast://([^:/\s]+)(?::(\d+))?(?:/(.*))?", text.strip(), re.IGNORECASE)
    if not match:
        return text  # the model says what a VAST address must look like
    source: dict[str, Any] = {"host": match.group(1)}
    if match.group(2):
        source["port"] = match.group(2)
    if match.group(3):
        source["layer"] = int(match.group(3)) if match.group(3).isdigit() else match.group(3)
    return source


def _target_from_form(posted: Mapping[str, str]) -> dict[str, Any]:
    mode = posted.get("target.mode") or "volume"
    target: dict[str, Any] = {"mode": mode}
    if mode == "box":
        target["box"] = {key: posted.get(f"target.box.{key}", "").strip() or (0 if key == "mip" else "")
                         for key in BOX_FIELDS}  # fmt: skip
    elif mode == "anchors":
        target["points"] = [dict(zip("xyz", re.split(r"[,\s]+", line.strip())))
                            for line in posted.get("target.points", "").splitlines() if line.strip()]  # fmt: skip
        for key in ("cube_xy", "cube_z"):
            if posted.get(f"target.{key}", "").strip():
                target[key] = posted[f"target.{key}"].strip()
    elif mode == "image" and posted.get("target.root", "").strip():
        target["root"] = posted["target.root"].strip()
    return target


def _message(error: dict) -> str:
    message = str(error.get("msg", "invalid"))
    return message.removeprefix("Value error, ")


def field_errors(data: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Validate ``data`` with the spec models: (field name -> what is wrong, errors about the
    request as a whole). Both empty: the request is a valid spec."""
    try:
        parse_spec(data)
    except ValidationError as exc:
        by_field: dict[str, list[str]] = {}
        general = []
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]
            if len(loc) >= 2 and loc[0] == data.get("kind"):
                inner = ".".join(loc[2:])
                by_field.setdefault(loc[1], []).append(f"{inner}: {_message(error)}" if inner else _message(error))
            else:
                general.append(_message(error))
        return {name: "; ".join(problems) for name, problems in by_field.items()}, general
    return {}, []


def split_problems(message: str, names: list[str]) -> tuple[dict[str, str], list[str]]:
    """A daemon's refusal (``"em: ... ; labels: ..."``, as :func:`~membraind.service.paths.check_paths`
    words it) split by the field each part names; parts naming no field are kept whole."""
    by_field: dict[str, str] = {}
    general: list[str] = []
    current: str | None = None
    for part in message.split("; "):
        match = re.match(r"([A-Za-z_]+)(?:[.\[][^:]*)?: ", part)
        if match and match.group(1) in names:
            current = match.group(1)
            by_field[current] = f"{by_field[current]}; {part}" if current in by_field else part
        elif current is not None:  # the rest of the same sentence ("...; move the data there")
            by_field[current] += f"; {part}"
        else:
            general.append(part)
    return by_field, general

