"""The Look page's ground-truth view: the patch sampler's contact sheet of a data set, as
``membraind preview-patches`` draws it (patches at any angle inside the painted regions)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from membraind.strict import StrictModel

__all__ = ["GroundTruthLook", "contact_sheet_png"]


class GroundTruthLook(StrictModel):
    """What to look at: EM and labels as training takes them."""

    em: Path = Field(description="folder of EM images or a TIFF stack")
    labels: Path = Field(description="folder of label images or a TIFF stack")
    mapping: str | None = Field(None, description="label mapping (default: config)")
    count: int = Field(32, ge=1, le=128, description="patches to draw")
    seed: int = Field(0, description="another seed draws other patches")


def contact_sheet_png(look: GroundTruthLook, settings) -> bytes:
    """The contact sheet of ``look`` (``settings``: the configuration, for the sampler's choices)."""
    from membraind.console.pictures import png_bytes
    from membraind.groundtruth.label_mapping import parse_mapping
    from membraind.groundtruth.pairs import load_ground_truth
    from membraind.groundtruth.preview import contact_sheet, sample_patches

    mapping = parse_mapping(look.mapping) if look.mapping else settings.groundtruth.mapping()
    images = load_ground_truth(look.em, look.labels, mapping)
    patches, _ = sample_patches(images, settings.normalization, settings.sampler, settings.augmentation,
                                settings.unet.multiple, look.count, seed=look.seed,
                                unpainted=settings.training.unpainted)  # fmt: skip
    return png_bytes(contact_sheet(patches))
