"""The loop's own cost: from "the user stops painting" to "the next version's predictions
are refreshed in VAST", with a fixed training budget.

Runs the loop as a lab has it (:class:`membraind.demo.vast_loop.LoopLab`: the emulator as
VAST on Windows, ``membraind serve`` as a real process, ISBI sections painted with
brush-stroke discs). After a first version is learned and shown (warm-up), each round
paints two more sections and times the way to the next version's refreshed layer, split
into phases read from the daemon's journal and the version's training history:

- quiet-time wait: the user stops painting -> the learning job is queued (the configured
  quiet time plus the poll that notices it);
- export and set-up: the job starts -> training starts (reading the painted ground truth
  from VAST, building the network), plus the queue's pick-up;
- training: the epochs themselves (the version's history);
- hand-over: the version is ready -> its prediction job is queued (the watcher's poll);
- prediction: computing the tiles (the job's own count);
- publishing: the rest of the prediction job (loading the model, writing the .vsvi,
  refreshing the layer in VAST) and its pick-up.

overhead = everything except training and prediction compute. Target: < 5 s on a
2-core machine.

    python benchmarks/vast_loop.py [--rounds 2] [--learn-minutes 0.2] [--quiet-seconds 1]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

DEFAULT_ISBI = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"

SMALL = {
    "unet": {"depth": 3, "base_filters": 8},
    "training": {"steps_per_epoch": 8, "batch_size": 4, "epochs": 1000, "device": "cpu"},
    "predict": {"device": "cpu", "runtime": "torch"},
}


def phases(lab, stopped: float, number: int) -> dict[str, float]:
    """The phases of the round that made version ``number``, in seconds."""
    from membraind.demo.vast_loop import MODEL

    version = {v.version: v for v in lab.versions()}[number]
    learn = next(r for r in lab.learning_jobs() if r.result
                 and str(version.run) in r.result.summary)  # fmt: skip
    predict = [r for r in lab.jobs(lambda r: r.kind == "predict" and f"{MODEL}@v{number}" in r.job().spec.models)]
    training = version.record()["history"][-1]["seconds"]  # cumulative: the last epoch's is the run's
    computed = sum(float(re.search(r"Mpx in ([\d.]+) s", r.result.summary).group(1)) for r in predict)
    first, last = min(r.created for r in predict), max(r.finished for r in predict)
    return {
        "quiet-time wait": learn.created - stopped,
        "export and set-up": learn.finished - learn.created - training,
        "training": training,
        "hand-over": first - learn.finished,
        "prediction": computed,
        "publishing": last - first - computed,
        "loop": last - stopped,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--isbi", type=Path, default=Path(os.environ.get("ISBI2012_DIR", DEFAULT_ISBI)))
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds (versions after the first)")
    parser.add_argument("--learn-minutes", type=float, default=0.2, help="training budget of each version")
    parser.add_argument("--quiet-seconds", type=float, default=1.0, help="the quiet time the daemon waits for")
    args = parser.parse_args()

    import numpy as np

    from membraind.demo.vast_loop import LoopLab
    from membraind.groundtruth.classes import INTERIOR, MEMBRANE
    from membraind.volumes.box import Box
    from membraind.volumes.open_volume import open_volume

    isbi = args.isbi.resolve()
    labels = open_volume(isbi / "train" / "label")
    truth = np.where(labels.read(Box.from_shape(labels.shape)) > 127, INTERIOR, MEMBRANE).astype(np.uint8)
    labels.close()
    root = Path(tempfile.mkdtemp(prefix="membraind-bench-loop-"))
    lab = LoopLab(root / "lab", isbi / "train" / "image", truth, config=SMALL, quiet_seconds=args.quiet_seconds,
                  learn_minutes=args.learn_minutes)  # fmt: skip
    lab.start_vast()
    rounds = []
    try:
        lab.paint([0, 1, 2], seed=0)
        lab.start_daemon()
        lab.wait_version(1)
        lab.place_nodes([(256, 256, 1), (300, 200, 3)])
        lab.wait_shown(1)  # warm-up: the engine, the layer loaded once
        for n in range(args.rounds):
            sections = [3 + 2 * n, 4 + 2 * n]
            lab.paint(sections, seed=n + 1)
            stopped = time.time()
            lab.wait_version(n + 2)
            lab.wait_shown(n + 2)
            rounds.append(phases(lab, stopped, n + 2))
    finally:
        lab.close()

    names = list(rounds[0])
    print(f"the loop on {os.cpu_count()} cores: ISBI sections, {args.learn_minutes:g} min training budget, "
          f"quiet time {args.quiet_seconds:g} s (seconds)")  # fmt: skip
    print(f"{'phase':20s}" + "".join(f"{'v' + str(i + 2):>9s}" for i in range(len(rounds))) + f"{'median':>9s}")
    for name in names:
        values = [r[name] for r in rounds]
        print(f"{name:20s}" + "".join(f"{v:9.2f}" for v in values) + f"{statistics.median(values):9.2f}")
    loop = statistics.median(r["loop"] for r in rounds)
    overhead = statistics.median(r["loop"] - r["training"] - r["prediction"] for r in rounds)
    print(f"RESULT loop_s={loop:.2f} overhead_s={overhead:.2f}")


if __name__ == "__main__":
    main()
