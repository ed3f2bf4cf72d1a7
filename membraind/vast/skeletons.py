"""Skeleton files: what the VAST emulator serves as annotation layers.

Two formats are read:

- membraind's JSON schema (written by :func:`save_skeleton_json`)::

      {"layers": [{"name": "traces",
                   "objects": [{"id": 1, "name": "neuron 1",
                                "nodes": [{"x": 10, "y": 20, "z": 0, "parent": null},
                                          {"x": 12, "y": 25, "z": 1, "parent": 0}]}]}]}

  A node's number is its position in ``nodes``, which is depth-first order as in VAST:
  node 0 is the root (``parent`` null) and every other node's parent comes before it.
  Coordinates are mip-0 voxels.

- VAST's headerless skeleton CSV export (vast-protocol.md section 7), one row per node:
  tree id, node id (0..N-1 per tree), a flags column, x, y, z (mip 0), parent node id
  (-1 for the root), child, branch child, seven unidentified columns and a text label.
  Only the first seven columns are used. The file becomes one layer named after the
  file stem, with one skeleton object per tree id (object id = tree id).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from membraind.atomic import write_text_atomic
from membraind.errors import InputError, describe_validation_error
from membraind.strict import StrictModel
from membraind.vast.layouts import SkeletonNode

__all__ = ["SkeletonObject", "AnnotationLayerData", "load_skeleton_file", "save_skeleton_json", "MAX_OBJECT_ID"]

# VAST's object table has one row per id up to the largest one, so ids far beyond the
# number of objects would make a huge table; this bound catches garbled ids.
MAX_OBJECT_ID = 1_000_000
_CSV_COLUMNS = 7  # tree id, node id, flags, x, y, z, parent: all the emulator needs


class SkeletonObject(StrictModel):
    """One skeleton: VAST object ``id`` (1-based), its name and its nodes in depth-first order."""

    id: int = Field(ge=1, le=MAX_OBJECT_ID)
    name: str = ""
    nodes: list[SkeletonNode] = []

    @model_validator(mode="before")
    @classmethod
    def _number_nodes(cls, data: Any) -> Any:
        # In files a node's number is its position; fill it in so nodes need not repeat it.
        if isinstance(data, dict) and isinstance(data.get("nodes"), list):
            data = dict(data)
            data["nodes"] = [
                {**node, "index": node.get("index", i)} if isinstance(node, dict) else node
                for i, node in enumerate(data["nodes"])
            ]
        return data

    @model_validator(mode="after")
    def _depth_first(self) -> "SkeletonObject":
        for i, node in enumerate(self.nodes):
            if node.index != i:
                raise ValueError(f"node {i} says its index is {node.index}; a node's index is its position")
            if min(node.x, node.y, node.z) < 0:
                raise ValueError(f"node {i} has a negative coordinate ({node.x}, {node.y}, {node.z})")
            if i == 0 and node.parent is not None:
                raise ValueError("node 0 must be the root (parent null): nodes are listed depth-first")
            if i > 0 and (node.parent is None or not 0 <= node.parent < i):
                raise ValueError(
                    f"node {i} has parent {node.parent}; every node but the root needs the index of a node "
                    "listed before it (depth-first order, one root per skeleton)"
                )
        return self


class AnnotationLayerData(StrictModel):
    """One annotation layer: its name and skeleton objects (distinct ids)."""

    name: str
    objects: list[SkeletonObject] = []

    @model_validator(mode="after")
    def _distinct_ids(self) -> "AnnotationLayerData":
        ids = [obj.id for obj in self.objects]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"object ids {duplicates} occur more than once; every object needs its own id")
        return self


class _SkeletonFile(StrictModel):
    layers: list[AnnotationLayerData]


def load_skeleton_file(path: Path) -> list[AnnotationLayerData]:
    """The annotation layers in ``path``: membraind JSON (``.json``) or VAST's skeleton CSV (anything else)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read skeleton file {path} ({exc}); give a .json or VAST .csv skeleton file") from None
    except UnicodeDecodeError:
        raise InputError(
            f"skeleton file {path} is not text (a VAST .vsanno file?); export the skeletons from VAST as CSV "
            "or write membraind skeleton JSON"
        ) from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        return _from_json(text, path)
    return [_from_csv(text, path)]


def _from_json(text: str, path: Path) -> list[AnnotationLayerData]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InputError(f"skeleton file {path} is not valid JSON ({exc})") from None
    try:
        return _SkeletonFile.model_validate(data).layers
    except ValidationError as exc:
        raise InputError(
            f"skeleton file {path}: {describe_validation_error(exc)}. Expected "
            '{"layers": [{"name": ..., "objects": [{"id": 1, "name": ..., "nodes": [{"x", "y", "z", "parent"}]}]}]}'
        ) from None


def _from_csv(text: str, path: Path) -> AnnotationLayerData:
    trees: dict[int, dict[int, tuple[int, int, int, int, int]]] = {}  # tree -> node id -> (x, y, z, parent, line)
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as exc:
        raise InputError(f"skeleton file {path} is not a readable CSV file ({exc})") from None
    for line, row in enumerate(rows, start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        where = f"skeleton file {path}, line {line}"
        if len(row) < _CSV_COLUMNS:
            raise InputError(
                f"{where}: {len(row)} columns; VAST skeleton CSV rows start with tree id, node id, flags, "
                "x, y, z, parent (give a VAST skeleton export or membraind JSON)"
            )
        try:
            tree, node, _, x, y, z, parent = (int(float(cell)) for cell in row[:_CSV_COLUMNS])
        except (ValueError, OverflowError):
            raise InputError(
                f"{where}: the first {_CSV_COLUMNS} columns must be numbers "
                f"(tree id, node id, flags, x, y, z, parent), got {row[:_CSV_COLUMNS]}"
            ) from None
        if not 1 <= tree <= MAX_OBJECT_ID:
            raise InputError(f"{where}: tree id {tree} is not a VAST object id (1..{MAX_OBJECT_ID})")
        if min(x, y, z) < 0 or node < 0 or parent < -1:
            raise InputError(f"{where}: negative node id, coordinate or parent (only the root's parent is -1)")
        if node in trees.setdefault(tree, {}):
            raise InputError(f"{where}: tree {tree} already has a node {node} (line {trees[tree][node][4]})")
        trees[tree][node] = (x, y, z, parent, line)
    objects = [_tree_object(tree, nodes, path) for tree, nodes in sorted(trees.items())]
    return AnnotationLayerData(name=path.stem, objects=objects)


def _tree_object(tree: int, rows: dict[int, tuple[int, int, int, int, int]], path: Path) -> SkeletonObject:
    """The tree's nodes renumbered depth-first from its root (VAST exports are usually in that order already)."""
    roots = [node for node, row in rows.items() if row[3] == -1]
    if len(roots) != 1:
        raise InputError(
            f"skeleton file {path}: tree {tree} has {len(roots)} root nodes (parent -1); a skeleton needs exactly one"
        )
    children: dict[int, list[int]] = {}
    for node, (_, _, _, parent, line) in rows.items():
        if parent != -1:
            if parent not in rows:
                raise InputError(f"skeleton file {path}, line {line}: parent {parent} is not a node of tree {tree}")
            children.setdefault(parent, []).append(node)
    order, stack = [], [roots[0]]
    while stack:  # iterative: long neurites are deeper than Python's recursion limit
        node = stack.pop()
        order.append(node)
        stack.extend(sorted(children.get(node, []), reverse=True))
    if len(order) != len(rows):
        lost = sorted(set(rows) - set(order))[:5]
        raise InputError(
            f"skeleton file {path}: tree {tree} nodes {lost} are not connected to its root (their parents form a cycle)"
        )
    number = {node: i for i, node in enumerate(order)}
    nodes = [
        SkeletonNode(index=i, x=rows[n][0], y=rows[n][1], z=rows[n][2],
                     parent=None if rows[n][3] == -1 else number[rows[n][3]])  # fmt: skip
        for i, n in enumerate(order)
    ]
    return SkeletonObject(id=tree, name=f"skeleton {tree}", nodes=nodes)


def save_skeleton_json(path: Path, layers: list[AnnotationLayerData]) -> Path:
    """Write ``layers`` as membraind skeleton JSON, atomically (a watcher never sees half a file)."""
    data = {
        "layers": [
            {
                "name": layer.name,
                "objects": [
                    {"id": obj.id, "name": obj.name,
                     "nodes": [{"x": n.x, "y": n.y, "z": n.z, "parent": n.parent} for n in obj.nodes]}  # fmt: skip
                    for obj in layer.objects
                ],
            }
            for layer in layers
        ]
    }
    return write_text_atomic(Path(path), json.dumps(data, indent=1) + "\n")
