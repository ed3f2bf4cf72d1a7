"""Anchor points from VAST skeletons: every node of the chosen annotation layers.

The original used one point per skeleton object; membraind uses every node, so a user
tracing a neurite gets predictions all along it. Polling again returns only the nodes
that are new or moved since the last poll, so placing a node in VAST leads to one new
cube being predicted, not the whole layer again.

A poll reads the nodes of the user's selected skeleton (where VAST adds nodes) and of
skeletons whose object-table row changed; the rest come from the last poll, and every
``full_every``-th poll reads them all (a node added inside a skeleton's bounding box and
then another skeleton selected leaves its row as it was).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from membraind.vast.client import VastClient
from membraind.vast.layouts import Skeleton
from membraind.volumes.box import Anchor

__all__ = ["NodeKey", "AnchorPoller"]

NodeKey = tuple[str, int, int]  # layer name, object id, node number


@dataclass
class AnchorPoller:
    """Polls annotation layers (by name) of a VAST for new or moved skeleton nodes."""

    client: VastClient
    layer_names: list[str]
    seen: dict[NodeKey, tuple[int, int, int]] = field(default_factory=dict)
    full_every: int = 12
    _read: dict[str, dict[int, Skeleton]] = field(default_factory=dict)  # layer name -> the last poll's skeletons
    _polls: int = 0

    def poll(self) -> list[Anchor]:
        """Anchors (mip-0) of the nodes added or moved since the last poll (all of them the first time)."""
        anchors, nodes = self.peek()
        self.commit(nodes)
        return anchors

    def peek(self) -> tuple[list[Anchor], dict[NodeKey, tuple[int, int, int]]]:
        """What :meth:`poll` would return, without marking anything seen, and the layers' nodes
        to hand to :meth:`commit` once those anchors are dealt with (until then they come again)."""
        changed: list[Anchor] = []
        current: dict[NodeKey, tuple[int, int, int]] = {}
        full = self._polls % self.full_every == 0
        self._polls += 1
        for name in self.layer_names:
            layer = self.client.find_layer(name)
            skeletons = self.client.skeletons(layer, None if full else self._read.get(name))
            self._read[name] = skeletons  # only a cache of what VAST holds: kept even if not committed
            for object_id, skeleton in skeletons.items():
                for node in skeleton.nodes:
                    key, position = (name, object_id, node.index), (node.x, node.y, node.z)
                    current[key] = position
                    if self.seen.get(key) != position:
                        changed.append(Anchor(x=node.x, y=node.y, z=node.z))
        return _unique(changed), current

    def commit(self, nodes: dict[NodeKey, tuple[int, int, int]]) -> None:
        """Mark ``nodes`` (from :meth:`peek`) seen."""
        # Deleted nodes are forgotten, so a node re-added at the same place counts as new.
        self.seen = nodes


def _unique(anchors: list[Anchor]) -> list[Anchor]:
    """Anchors without repeats (two nodes on one voxel give one cube), in first-seen order."""
    return list({(a.x, a.y, a.z): a for a in anchors}.values())
