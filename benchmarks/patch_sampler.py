"""Patch sampler throughput on one CPU core, with every augmentation on.

Draws 256 px patches from the real ISBI 2012 training sections with an irregular 70%
of each label erased (as a user's partial painting), every augmentation at probability
1, and reports patches per second in steady state (valid-centre masks already cached)
and the one-off time to build the masks. Target (issue 2): >= 100 patches/s.

    python benchmarks/patch_sampler.py [--isbi PATH] [--patches N]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

# One core, as the target says: set before numpy and scipy load their thread pools.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

from membraind.demo.brush import erase_irregular  # noqa: E402
from membraind.groundtruth.settings import AugmentationSettings  # noqa: E402
from membraind.groundtruth.label_mapping import LabelMapping  # noqa: E402
from membraind.groundtruth.pairs import GroundTruthImage, load_ground_truth  # noqa: E402
from membraind.groundtruth.sampler import PatchSampler  # noqa: E402

DEFAULT_ISBI = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"


def measure(images, size: int, settings: AugmentationSettings, patches: int) -> tuple[float, float]:
    """(seconds to build every valid-centre mask, steady-state patches per second)."""
    sampler = PatchSampler(images, size, augmentation=settings, seed=0)
    start = time.perf_counter()
    sampler.warm_up()
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(patches):
        sampler.sample()
    return warm, patches / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isbi", type=Path, default=DEFAULT_ISBI)
    parser.add_argument("--patches", type=int, default=500)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    full = load_ground_truth(args.isbi / "train" / "image", args.isbi / "train" / "label", LabelMapping.preset("isbi"))
    partial = [
        GroundTruthImage(gt.name, gt.em, erase_irregular(gt.labels, 0.7, seed=k, smoothness=90))
        for k, gt in enumerate(full[:20])
    ]
    # 30% of a 512 px section cannot hold a 256 px patch, so the partial rows use 128 px.
    rows = [
        ("full labels, all augmentations p=1", full[:20], 256, AugmentationSettings.all_on()),
        ("full labels, default augmentations", full[:20], 256, AugmentationSettings()),
        ("full labels, no augmentation", full[:20], 256, AugmentationSettings.none()),
        ("70% erased, all augmentations p=1", partial, 128, AugmentationSettings.all_on()),
    ]
    print(f"{'case (20 ISBI sections, one CPU core)':40s} {'patch':>6s} {'masks s':>8s} {'patches/s':>10s}")
    rates = []
    for name, images, size, settings in rows:
        warm, rate = measure(images, size, settings, args.patches)
        rates.append(rate)
        print(f"{name:40s} {size:6d} {warm:8.2f} {rate:10.1f}")
    print(f"RESULT patches_per_s={rates[0]:.1f}")


if __name__ == "__main__":
    main()
