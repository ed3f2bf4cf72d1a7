"""Anchor points from VAST skeletons: every node of the chosen annotation layers.

The original used one point per skeleton object; membraind uses every node, so a user
tracing a neurite gets predictions all along it. Polling again returns only the nodes
that are new or moved since the last poll, so placing a node in VAST leads to one new
cube being predicted, not the whole layer again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from membraind.vast.client import VastClient
from membraind.volumes.box import Anchor

__all__ = ["NodeKey", "AnchorPoller"]

NodeKey = tuple[str, int, int]  # layer name, object id, node number


@dataclass
class AnchorPoller:
    """Polls annotation layers (by name) of a VAST for new or moved skeleton nodes."""

    client: VastClient
    layer_names: list[str]
    seen: dict[NodeKey, tuple[int, int, int]] = field(default_factory=dict)

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
        for name in self.layer_names:
            layer = self.client.find_layer(name)
            for object_id, (_, nodes) in self.client.skeletons(layer).items():
                for node in nodes:
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
