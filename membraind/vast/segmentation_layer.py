"""A 2D segmentation shown in VAST as a segmentation layer of its own.

The cells of a :func:`~membraind.segment.run.run_segmentation` run are written into a
VAST segmentation layer found by name, or added (ADDNEWLAYER) the first time, so running
the segmentation again refreshes the same layer. Only the region that run covers is
written, all of it (boundary as 0), so cells of an earlier run there are replaced.

VAST's segmentation reads and writes carry 16-bit ids, while the segmentation numbers its
cells across the whole volume: the region's cells are renumbered 1, 2, ... in section
order, and a region with more cells than 16 bits hold is refused before anything is written.
"""

from __future__ import annotations

import numpy as np

from membraind.errors import InputError
from membraind.segment.run import SegmentationReport
from membraind.vast.client import VastClient
from membraind.vast.editable import MAX_VAST_ID, labels_at_mip0
from membraind.vast.layouts import LayerType
from membraind.volumes.box import Box

__all__ = ["segmentation_layer", "show_segmentation_in_vast"]

_SEGMENTATION_TYPES = (LayerType.SEGMENTATION, LayerType.SEGMENTATION_XYZ)


def segmentation_layer(client: VastClient, name: str) -> int:
    """The number of VAST's segmentation layer called ``name``, added (after the selected layer) when there is none."""
    for number, info in enumerate(client.layers()):
        if info.name == name:
            if info.type not in _SEGMENTATION_TYPES:
                raise InputError(f"VAST layer {number} {name!r} is not a segmentation layer; choose another layer_name")
            return number
    return client.add_layer(name, LayerType.SEGMENTATION)


def show_segmentation_in_vast(client: VastClient, layer_name: str, report: SegmentationReport) -> tuple[int, int]:
    """Write the cells of ``report``'s region into VAST's segmentation layer ``layer_name``
    (see the module docstring); returns (layer number, cells written)."""
    assert report.region is not None and report.store is not None, "a finished segmentation's report"
    region, store = report.region, report.store
    cells = sum(ids.count for ids in report.ids.values())
    if cells > MAX_VAST_ID:
        raise InputError(
            f"the segmented region ({region}) holds {cells} cells, more than the {MAX_VAST_ID} a VAST segmentation "
            "layer can take in one go (its ids are 16-bit); segment a smaller box (box) to show it in VAST"
        )
    x, y, z = client.info().size
    if (z, y, x) != store.full_shape:
        raise InputError(
            f"the VAST volume is {x}x{y} px x {z} sections, but the membrane probability was predicted on "
            f"{store.full_shape[2]}x{store.full_shape[1]} px x {store.full_shape[0]} sections; show it in the VAST "
            "it was predicted from"
        )
    volume = Box.from_shape((z, y, x))
    layer = segmentation_layer(client, layer_name)
    offset = 0
    with client.api_layer(layer):
        for section, ids in sorted(report.ids.items()):
            crop = region.section(section)
            found = store.read_region(crop.model_copy(update={"mip": 0})).astype(np.int64)  # the store's level 0 is crop.mip
            # Section ids are first .. first + count - 1: they become offset + 1 .. offset + count.
            labels = np.where(found > 0, found - ids.first + 1 + offset, 0).astype(np.uint16)
            offset += ids.count
            target = crop.at_mip(0).intersect(volume)
            client.write_segmentation(target, labels_at_mip0(labels, crop.mip, target.shape))
    return layer, offset
