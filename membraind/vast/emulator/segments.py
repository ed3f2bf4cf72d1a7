"""The emulated VAST's segment table: names and the segment tree of its segmentation layer.

Row ``i`` is segment id ``i``; row 0 is the background. Bounding boxes are not stored:
they are computed from the painted voxels whenever the table is asked for, so they are
always those of what is painted now (VAST keeps them up to date as users paint).

Emulation choices where VAST's behaviour is not documented:

- ADDSEGMENT(ref, 1, name) makes the new segment the last child of ``ref``; ref 0 (the
  background) means the top level of the tree. ADDSEGMENT(ref, 0, name) puts it right
  after ``ref``, under the same parent.
- Painting an id beyond the table adds rows up to it, named ``Segment N`` (a segment the
  user never named), at the top level.
- A segment's flags and colours are 0; its anchor is the first corner of its box.
"""

from __future__ import annotations

from membraind.vast.emulator.sparse_labels import SparseLabels
from membraind.vast.layouts import Segment

__all__ = ["SegmentTable", "BACKGROUND_NAME", "unnamed"]

BACKGROUND_NAME = "Background"


def unnamed(segment: int) -> str:
    """The name of a segment painted before anyone named it."""
    return f"Segment {segment}"


class SegmentTable:
    """Names and tree of the segments of ``labels`` (the emulator's segmentation layer)."""

    def __init__(self, labels: SparseLabels) -> None:
        self.labels = labels
        self.names = [BACKGROUND_NAME]
        self.parents = [0]
        self._children: dict[int, list[int]] = {0: []}  # parent -> children in tree order (0: top level)

    def __len__(self) -> int:
        return len(self.names)

    def add(self, name: str, reference: int = 0, as_child: bool = True) -> int:
        """A new segment ``name``: last child of ``reference``, or right after it; returns its id."""
        if not 0 <= reference < len(self.names):
            raise IndexError(f"segment {reference} is not in 0..{len(self.names) - 1}")
        parent = reference if as_child or reference == 0 else self.parents[reference]
        segment = len(self.names)
        self.names.append(name)
        self.parents.append(parent)
        self._children[segment] = []
        siblings = self._children[parent]
        siblings.insert(len(siblings) if as_child or reference == 0 else siblings.index(reference) + 1, segment)
        return segment

    def rename(self, segment: int, name: str) -> None:
        if not 1 <= segment < len(self.names):
            raise IndexError(f"segment {segment} is not in 1..{len(self.names) - 1}")
        self.names[segment] = name

    def grow(self, largest: int) -> None:
        """Rows up to id ``largest`` (a painted id the table does not have yet)."""
        while len(self.names) <= largest:
            self.add(unnamed(len(self.names)))

    def rows(self) -> list[Segment]:
        """The table as GETALLSEGMENTDATA sends it, boxes from the painted voxels now."""
        boxes = self.labels.bounding_boxes()
        self.grow(max(boxes, default=0))
        rows = []
        for segment, (name, parent) in enumerate(zip(self.names, self.parents)):
            siblings = self._children[parent] if segment else []
            at = siblings.index(segment) if segment else 0
            box = boxes.get(segment)
            rows.append(Segment(
                id=segment, name=name, parent=parent if segment else 0,
                child=self._children[segment][0] if segment and self._children[segment] else 0,
                previous=siblings[at - 1] if segment and at > 0 else 0,
                next=siblings[at + 1] if segment and at + 1 < len(siblings) else 0,
                anchor=box[:3] if box else (0, 0, 0), bbox=box,
            ))  # fmt: skip
        return rows
