"""Editable predictions: predicted segments written into a VAST segmentation layer.

Users correct what was predicted into new ground truth, so membraind must never paint
over what they already painted: only voxels that are 0 (unpainted) in the layer are
written. (VAST's API has no compare-and-set, so a stroke painted in the same box between
our read and our write can still be overwritten; the window is one round trip.)
"""

from __future__ import annotations

import numpy as np

from membraind.errors import InputError
from membraind.vast.client import VastClient
from membraind.volumes.box import Box

__all__ = ["write_unpainted", "membrane_segments", "renumber_segments", "labels_at_mip0", "MAX_VAST_ID"]

MAX_VAST_ID = 65535


def write_unpainted(client: VastClient, layer: int, box: Box, labels: np.ndarray) -> int:
    """Write ``labels`` (ids, 0 = leave as is) into segmentation ``layer`` inside ``box``
    where the layer is still 0; returns how many voxels were written."""
    labels = np.asarray(labels)
    if labels.shape != box.shape:
        raise InputError(f"labels of shape {labels.shape} do not fit {box} (shape {box.shape})")
    if labels.size and (labels.min() < 0 or labels.max() > MAX_VAST_ID):
        raise InputError(f"VAST segment ids are 16-bit; these labels hold {labels.min()}..{labels.max()}")
    with client.api_layer(layer):
        existing = client.read_segmentation(box)
        fresh = (existing == 0) & (labels > 0)
        if not fresh.any():
            return 0
        client.write_segmentation(box, np.where(fresh, labels, existing).astype(np.uint16))
    return int(np.count_nonzero(fresh))


def membrane_segments(membrane: np.ndarray, threshold: float, segment_id: int) -> np.ndarray:
    """A thresholded membrane map as one segment id (mEMbrain painted membrane as id 2)."""
    if not 1 <= segment_id <= MAX_VAST_ID:
        raise InputError(f"segment id must be 1..{MAX_VAST_ID}, not {segment_id}")
    return np.where(np.asarray(membrane) > threshold, segment_id, 0).astype(np.uint16)


def renumber_segments(ids: np.ndarray, first_id: int) -> np.ndarray:
    """Instance ids (0 = boundary) renumbered ``first_id``, ``first_id + 1``, ... for VAST's 16-bit ids."""
    values, inverse = np.unique(np.asarray(ids), return_inverse=True)
    has_zero = values.size and values[0] == 0
    count = values.size - int(has_zero)
    if first_id < 1 or first_id + count - 1 > MAX_VAST_ID:
        raise InputError(
            f"{count} segments starting at id {first_id} do not fit VAST's 16-bit ids (up to {MAX_VAST_ID}); "
            "write a smaller region or start at a lower id"
        )
    lookup = np.arange(values.size, dtype=np.int64) + first_id - int(has_zero)
    if has_zero:
        lookup[0] = 0
    return lookup[inverse].reshape(np.shape(ids)).astype(np.uint16)


def labels_at_mip0(labels: np.ndarray, mip: int, shape: tuple[int, int, int]) -> np.ndarray:
    """Mip-``mip`` labels as mip-0 labels of ``shape`` (each pixel a 2^mip block, cut at the volume's edge):
    VAST's segmentation is written at mip 0, where the user paints."""
    scale = 2**mip
    return np.repeat(np.repeat(labels, scale, axis=1), scale, axis=2)[:, : shape[1], : shape[2]]
