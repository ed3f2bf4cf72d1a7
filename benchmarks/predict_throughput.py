"""Prediction throughput: naive loop vs raw runtime vs membraind end to end, and memory.

Builds a volume of ``--sections`` 1024 x 1024 sections from ISBI 2012 (each a 2 x 2
mosaic of mirrored 512 px sections) and predicts it with the default network
architecture (weights do not change speed), printing megapixels per second:

- naive: PyTorch eager fp32, one tile at a time, read -> normalise -> infer -> write
  in sequence (no overlap of I/O and compute);
- raw: the runtime of the best end-to-end row on pre-loaded, pre-normalised tiles;
- e2e torch / e2e onnx: ``membraind predict`` (run_prediction) with that runtime.

Then the peak memory (RSS) of whole-volume prediction of 40 and 160 sections with a
small network, each in its own process, to show memory does not grow with the volume.

    python benchmarks/predict_throughput.py [--sections 16] [--repeat 1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_ISBI = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"


def build_volume(isbi: Path, out: Path, sections: int) -> Path:
    """``sections`` 1024 x 1024 PNG sections, each a mosaic of four ISBI sections."""
    from membraind.volumes.image_files import read_image, write_image

    em = [read_image(p) for p in sorted((isbi / "train" / "image").glob("*.png"))]
    out.mkdir(parents=True, exist_ok=True)
    for z in range(sections):
        a, b, c, d = (em[(z + k) % len(em)] for k in range(4))
        mosaic = np.block([[a, b[:, ::-1]], [c[::-1], d[::-1, ::-1]]])
        write_image(out / f"{z:04d}.png", mosaic)
    return out


def make_bundle(out: Path, base_filters: int | None = None) -> Path:
    """A bundle of the default architecture (or a smaller one), untrained."""
    import torch

    from membraind.config import load_settings
    from membraind.groundtruth.normalization import IntensityNormalization
    from membraind.nn.bundle import ModelMetadata, default_class_names, save_bundle
    from membraind.nn.unet import UNet

    architecture = load_settings().unet
    if base_filters:
        architecture = architecture.model_copy(update={"base_filters": base_filters})
    torch.manual_seed(0)
    metadata = ModelMetadata(
        name="throughput", architecture=architecture, class_names=default_class_names(architecture.classes),
        normalization=IntensityNormalization(), patch_size=128,
    )  # fmt: skip
    return save_bundle(out, UNet(architecture), metadata)


def naive(volume_dir: Path, bundle_path: Path, out: Path, tile: int, context: int) -> float:
    """Megapixels per second of the plain sequential loop."""
    import torch

    from membraind.nn.bundle import load_bundle
    from membraind.nn.inference import pad_to_multiple
    from membraind.volumes.image_files import read_image, write_image

    bundle = load_bundle(bundle_path)
    model, norm = bundle.model.eval(), bundle.metadata.normalization
    started, pixels = time.perf_counter(), 0
    for path in sorted(volume_dir.glob("*.png")):
        section = read_image(path)
        value_range = norm.section_range(section)
        padded = np.pad(section, context, mode="reflect")
        for y in range(0, section.shape[0], tile):
            for x in range(0, section.shape[1], tile):
                window = norm.apply(padded[y : y + tile + 2 * context, x : x + tile + 2 * context], value_range)
                window, _ = pad_to_multiple(window, bundle.metadata.architecture.multiple)
                with torch.no_grad():
                    p = torch.softmax(model(torch.from_numpy(window)[None, None]), 1)[0, 1].numpy()
                core = p[context : context + tile, context : context + tile]
                write_image(out / f"{path.stem}_{y}_{x}.png", np.rint(core * 255).astype(np.uint8))
                pixels += core.size
    return pixels / 1e6 / (time.perf_counter() - started)


def raw_runtime(volume_dir: Path, bundle_path: Path, settings, sections: int) -> tuple[float, str]:
    """Megapixels per second of the runtime alone on pre-loaded, normalised tiles."""
    from membraind.nn.bundle import load_bundle
    from membraind.predict.runtimes import load_runtime
    from membraind.predict.tiling import input_size
    from membraind.volumes.image_files import read_image

    bundle = load_bundle(bundle_path)
    runtime = load_runtime(bundle, settings)
    size = input_size(settings.tile_size, settings.context, runtime.multiple)
    norm = bundle.metadata.normalization
    tiles = []
    for path in sorted(volume_dir.glob("*.png"))[:sections]:
        section = read_image(path)
        padded = np.pad(section, settings.context, mode="reflect")
        tiles.append(norm.apply(padded[:size, :size], norm.section_range(section)))
    batch = max(settings.batch_size, 1)
    runtime(np.stack(tiles[:batch])[:, None])  # warm-up (one-off allocations)
    started = time.perf_counter()
    for i in range(0, len(tiles), batch):
        runtime(np.stack(tiles[i : i + batch])[:, None])
    return len(tiles) * settings.tile_size**2 / 1e6 / (time.perf_counter() - started), runtime.name


def end_to_end(volume_dir: Path, bundle_path: Path, out: Path, settings) -> float:
    from membraind.predict.request import PredictRequest
    from membraind.predict.run import run_prediction

    request = PredictRequest(volume=volume_dir, bundles=[bundle_path], out=out)
    report = run_prediction(request, settings)
    return report.megapixels / report.seconds


def peak_rss_mb(volume_dir: Path, bundle_path: Path, out: Path) -> float:
    """Peak RSS of a whole-volume prediction in a fresh process (the ``membraind predict`` command).

    Read from the child's own ``VmHWM``: ``getrusage`` would report the benchmark's
    size, since Linux carries the maximum RSS over fork and exec.
    """
    argv = ["predict", str(volume_dir), "--bundle", str(bundle_path), "--out", str(out)]
    code = (
        "import sys; from membraind.cli import main; rc = main(sys.argv[1:]); "
        "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))); sys.exit(rc)"
    )
    result = subprocess.run([sys.executable, "-c", code, *argv], check=True, capture_output=True, text=True)
    line = next(line for line in result.stdout.splitlines() if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024  # kB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isbi", type=Path, default=DEFAULT_ISBI)
    parser.add_argument("--sections", type=int, default=16)
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--skip-memory", action="store_true", help="leave out the 40/160-section memory rows")
    args = parser.parse_args()

    from membraind.config import load_settings
    from membraind.predict.settings import PredictSettings

    work = args.work or Path(tempfile.mkdtemp(prefix="predict-throughput-"))
    volume = build_volume(args.isbi, work / "volume", args.sections)
    bundle = make_bundle(work / "bundle")
    settings: PredictSettings = load_settings().predict
    rows: dict[str, float] = {}

    (work / "naive").mkdir(exist_ok=True)
    rows["naive"] = naive(volume, bundle, work / "naive", settings.tile_size, settings.context)
    torch_settings = settings.model_copy(update={"runtime": "torch"})
    onnx_settings = settings.model_copy(update={"runtime": "onnx"})
    rows["e2e_torch"] = end_to_end(volume, bundle, work / "e2e_torch", torch_settings)
    rows["e2e_ort"] = end_to_end(volume, bundle, work / "e2e_ort", onnx_settings)
    best_name = "e2e_torch" if rows["e2e_torch"] >= rows["e2e_ort"] else "e2e_ort"
    best_settings = torch_settings if best_name == "e2e_torch" else onnx_settings
    rows["raw"], runtime_name = raw_runtime(volume, bundle, best_settings, args.sections)

    print(f"{args.sections} sections of 1024 x 1024, default network, tile {settings.tile_size} + context {settings.context}")
    print(f"{'row':28s} {'Mpx/s':>8s}")
    labels = {
        "naive": "(a) naive loop (torch fp32)",
        "raw": f"(b) raw runtime ({runtime_name})",
        "e2e_torch": "(c) end-to-end, PyTorch",
        "e2e_ort": "(d) end-to-end, ONNX Runtime",
    }
    for key in ("naive", "raw", "e2e_torch", "e2e_ort"):
        print(f"{labels[key]:28s} {rows[key]:8.3f}")
    e2e_over_raw = rows[best_name] / rows["raw"]
    best_over_naive = max(rows["e2e_torch"], rows["e2e_ort"]) / rows["naive"]
    print(f"best end-to-end ({best_name}) / raw runtime: {e2e_over_raw:.2f}   best / naive: {best_over_naive:.2f}")

    rss = {40: float("nan"), 160: float("nan")}
    if not args.skip_memory:
        small = make_bundle(work / "small-bundle", base_filters=4)
        for count in (40, 160):
            stack = build_volume(args.isbi, work / f"volume{count}", count)
            rss[count] = peak_rss_mb(stack, small, work / f"rss{count}")
            print(f"peak RSS, whole-volume prediction of {count} sections (small network): {rss[count]:.0f} MB")
    print(
        f"RESULT naive={rows['naive']:.3f} raw={rows['raw']:.3f} e2e_torch={rows['e2e_torch']:.3f} "
        f"e2e_ort={rows['e2e_ort']:.3f} e2e_over_raw={e2e_over_raw:.3f} best_over_naive={best_over_naive:.3f} "
        f"rss_mb_40={rss[40]:.0f} rss_mb_160={rss[160]:.0f}"
    )


if __name__ == "__main__":
    main()
