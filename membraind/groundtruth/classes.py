"""membraind's one internal label convention.

Every label image inside membraind holds these class values, whatever the file it came
from used (see :mod:`membraind.groundtruth.label_mapping`).
"""

UNANNOTATED = 0  #: not painted; ignored by the sampler and the loss
INTERIOR = 1  #: cell interior (cytoplasm, neuropil)
MEMBRANE = 2  #: cell membrane
THIRD = 3  #: an optional third class, e.g. extracellular space

CLASS_NAMES = {UNANNOTATED: "unannotated", INTERIOR: "interior", MEMBRANE: "membrane", THIRD: "third"}
