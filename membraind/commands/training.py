"""Training subcommands: train, finetune, models, export-onnx, import-model, evaluate."""

from __future__ import annotations

import argparse
from pathlib import Path

from membraind_client.progress import EtaClock, no_progress

from membraind.commands import (
    Add, add_ground_truth_arguments, add_mapping_argument, add_voxel_size_argument, progress_bar,
    spec_from_args, voxel_size_argument,
)  # fmt: skip
from membraind.config import Settings
from membraind.errors import InputError


def _spec(args: argparse.Namespace, spec_type: type = None, **extra):
    """The train (or finetune) job spec the command line describes."""
    from membraind.jobs.specs import TrainSpec

    return spec_from_args(
        spec_type or TrainSpec,
        em=args.em, labels=args.labels, vast=painted_source(args), mapping=args.mapping and args.mapping.text(), val_em=args.val_em, val_labels=args.val_labels,
        out=args.out, model=args.model, name=args.name, epochs=args.epochs, steps_per_epoch=args.steps, max_minutes=args.minutes,
        patch_size=args.patch_size, voxel_size_nm=voxel_size_argument(args.voxel_size), device=args.device,
        seed=args.seed, restart=args.restart, start_from=args.start_from, **extra,
    )  # fmt: skip


def add_painted_arguments(p: argparse.ArgumentParser) -> None:
    """``--vast vast://HOST:PORT`` and how to read what is painted there (instead of --em/--labels)."""
    from membraind.commands.predict import layer_ref

    p.add_argument("--vast", metavar="vast://HOST:PORT",
                   help="ground truth painted in this VAST's segmentation layer, found there (instead of --em/--labels)")
    p.add_argument("--em-layer", type=layer_ref, help="--vast: the EM layer, number or name (default: the address's /LAYER, else 0)")
    p.add_argument("--segmentation-layer", type=layer_ref,
                   help="--vast: the painted segmentation layer, number or name (default: 'segmentation')")
    p.add_argument("--gt-mip", type=int, help="--vast: mip to read the painting and EM at (default 0; evaluate: the model's)")
    p.add_argument("--convention", choices=("names", "instances"),
                   help="--vast: names (segments named membrane / interior, or inside folders so named; default) "
                   "or instances (each segment a cell)")  # fmt: skip


def painted_source(args: argparse.Namespace):
    """The :class:`~membraind.vast.painted.VastGroundTruth` of ``--vast`` and its options (None without ``--vast``)."""
    from membraind.commands.predict import require_vast
    from membraind.errors import InputError
    from membraind.vast.painted import VastGroundTruth

    options = {"em_layer": args.em_layer, "segmentation_layer": args.segmentation_layer, "mip": args.gt_mip,
               "convention": args.convention}  # fmt: skip
    if args.vast is None:
        given = [f"--{k.replace('_', '-')}" for k, v in options.items() if v is not None]
        if given:
            raise InputError(f"{', '.join(given).replace('--mip', '--gt-mip')} read(s) ground truth from VAST: add --vast vast://HOST:PORT")
        return None
    vast = require_vast(args.vast, "--vast names the VAST where the ground truth is painted")
    if options["em_layer"] is None and "/" in args.vast[len("vast://"):]:
        options["em_layer"] = vast.layer
    return spec_from_args(VastGroundTruth, host=vast.host, port=vast.port, **options)


def _train(spec, settings: Settings) -> int:
    from membraind.groundtruth.sampler import patch_size_note
    from membraind.jobs.execute import claim_version, make_trainer, training_data, training_outcome, training_result
    from membraind.nn.history import format_minutes
    from membraind.nn.trainer import TrainingCancelled

    data = training_data(spec, settings)
    if spec.out is None:  # a lab model's next version: claimed once the data are known to load
        spec = claim_version(spec, settings.service.models_path())
        print(f"lab model {spec.model}: training version {spec.version} into {spec.out}")
    trainer = make_trainer(spec, settings, data)
    t = trainer.settings
    limit = f"{t.epochs} epochs" + (f" or {format_minutes(t.max_minutes)}, whichever ends first" if t.max_minutes else "")
    print(
        f"training on {len(data.train)} image(s), validating on {len(data.validation)}, device {trainer.device}; "
        f"{patch_size_note(trainer.batches.sampler)}; up to {limit}; run folder {spec.out}"
    )
    progress, close_bar = progress_bar()
    try:
        bundle = trainer.run(EtaClock(progress))  # as run_job does for every other job
    except (TrainingCancelled, KeyboardInterrupt):
        close_bar()
        again = f" with --out {spec.out}" if spec.model else ""
        print(f"{training_outcome(spec.out / 'model')}. Run the same command again{again} to resume ({spec.out}).")
        return 130
    close_bar()
    print(training_result(spec.out, bundle).summary)
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    return _train(_spec(args), settings)


def cmd_finetune(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.jobs.specs import FinetuneSpec

    spec = _spec(
        args, FinetuneSpec, parent=args.parent, mode=args.mode, leaky_factor=args.leaky_factor,
        episodic_ratio=args.episodic_ratio,
    )  # fmt: skip
    return _train(spec, settings)


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.nn.bundle import read_metadata
    from membraind.nn.starter import STARTER_NAME, starter_path
    from membraind.nn.versions import lab_models, parent_name

    folder = args.models_dir or settings.service.models_path()
    starter = starter_path()
    if starter is not None:
        print(f"{STARTER_NAME} (shipped with membraind, {starter}): {read_metadata(starter).description or ''}")
    else:
        print(f"{STARTER_NAME}: not installed (first versions start from scratch)")
    models = lab_models(folder)
    if not models:
        print(f"no lab models in {folder}: membraind train --model NAME ... makes the first version")
        return 0
    print(f"{'MODEL':20s} {'VERSION':>7s}  {'TRAINED':19s}  {'FROM':14s} {'MODE':10s} {'KEPT':>5s} {'VAL F1':>6s}  "
          f"{'STATE':12s}  GROUND TRUTH")  # fmt: skip
    for name, listed in models.items():
        for v in listed:
            if not v.ready:
                print(f"{name:20s} {'v' + str(v.version):>7s}  {'':19s}  {'':14s} {'':10s} {'':>5s} {'':>6s}  training")
                continue
            meta = read_metadata(v.bundle)
            parent = parent_name(meta.parent, folder) if meta.parent else "-"
            mode = (meta.training.get("transfer") or {}).get("mode", "-") if meta.parent else _origin(meta.source)
            kept = meta.outcome.kept_epoch if meta.outcome else None
            f1 = f"{meta.outcome.kept_val_membrane_f1:.3f}" if meta.outcome and meta.outcome.kept_val_membrane_f1 is not None else "-"
            state = meta.outcome.why if meta.outcome else "ready"
            print(f"{name:20s} {'v' + str(v.version):>7s}  {meta.created[:19]:19s}  {parent:14s} {mode:10s} "
                  f"{kept or '-':>5} {f1:>6s}  {state:12s}  {_ground_truth(meta)}")  # fmt: skip
    return 0


def _ground_truth(meta) -> str:
    """What a version learned from: ``painted 2024-05-02 14:10, mip 0: membrane 1.2k, interior 40k voxels``
    for ground truth painted in VAST, else the label files' folder."""
    record = meta.ground_truth
    if record is None:
        data = meta.training.get("data") or []
        return f"files {Path(data[0]['labels']).name}/" if data else "-"
    counts = ", ".join(f"{name} {_count(n)}" for name, n in record.voxels_per_class.items())
    return f"painted {record.read_at[:16].replace('T', ' ')}, mip {meta.mip}: {counts} voxels"


def _count(n: int) -> str:
    """``950``, ``12.3k``, ``4.1M``: a voxel count at a glance."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g}{suffix}"
    return str(n)


def _origin(source: str) -> str:
    """How a version without a parent came about: trained anew, or imported (onnx-import, state-dict-import)."""
    return "new" if source == "membraind" else source


def cmd_export_onnx(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.jobs.execute import run_export_onnx
    from membraind.jobs.specs import ExportOnnxSpec

    spec = spec_from_args(ExportOnnxSpec, bundle=args.bundle, out=args.out)
    print(run_export_onnx(spec, no_progress, lambda: False).summary)
    return 0


def cmd_import_model(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.commands import run_spec
    from membraind.jobs.execute import claim_version
    from membraind.jobs.specs import ImportModelSpec

    architecture = None
    if args.depth is not None or args.base_filters is not None or args.classes is not None:
        chosen = {"depth": args.depth, "base_filters": args.base_filters, "classes": args.classes}
        architecture = settings.unet.model_copy(update={k: v for k, v in chosen.items() if v is not None})
    spec = spec_from_args(
        ImportModelSpec, file=args.file, out=args.out, model=args.model, name=args.name, architecture=architecture,
        class_names=args.class_names.split(",") if args.class_names else None, onnx_outputs=args.onnx_outputs,
        patch_size=args.patch_size, mip=args.mip, voxel_size_nm=voxel_size_argument(args.voxel_size),
    )  # fmt: skip
    if spec.out is None:  # a lab model's next version
        if not spec.file.is_file():  # said before a version is claimed for nothing
            raise InputError(f"{spec.file} does not exist; check the path")
        spec = claim_version(spec, settings.service.models_path())
        print(f"lab model {spec.model}: importing version {spec.version} into {spec.out}")
    try:
        run_spec(spec, settings)
    except BaseException:
        if spec.version is not None and not any(spec.out.iterdir()):
            spec.out.rmdir()  # the claimed version holds nothing: the number is free again
        raise
    return 0


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.jobs.execute import evaluate
    from membraind.jobs.specs import EvaluateSpec

    spec = spec_from_args(
        EvaluateSpec, bundle=args.bundle, model=args.model, em=args.em, labels=args.labels,
        mapping=args.mapping and args.mapping.text(), vast=painted_source(args), out=args.out, runtime=args.runtime,
    )  # fmt: skip
    result = evaluate(spec, settings, args.models_dir or settings.service.models_path())
    print(result.table())
    return 0


def _add_training_arguments(p: argparse.ArgumentParser) -> None:
    add_ground_truth_arguments(p, required=False)
    add_painted_arguments(p)
    p.add_argument("--val-em", type=Path, help="validation EM (default: hold out part of the training data)")
    p.add_argument("--val-labels", type=Path, help="validation labels (with --val-em)")
    p.add_argument("--out", type=Path, help="run folder: checkpoint, history, learning curve, model/ (or --model)")
    p.add_argument(
        "--model", help="a lab model: this run becomes its next version, in the models folder ([service] models_dir)"
    )
    p.add_argument("--name", help="model name stored in the bundle (default: --model, else the run folder's name)")
    p.add_argument("--epochs", type=int, help="number of epochs (default: config)")
    p.add_argument("--steps", type=int, help="batches per epoch (default: config)")
    p.add_argument("--minutes", type=float, help="stop after this many minutes of training")
    p.add_argument("--patch-size", type=int, help="patch side in pixels (default: config, else chosen from the painted regions)")
    add_voxel_size_argument(p, "of the EM, stored in the bundle (default: what the EM's TIFF tags record)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ... (default: config, auto)")
    p.add_argument("--seed", type=int, help="random seed (default: config)")
    p.add_argument("--restart", action="store_true", help="start over instead of resuming a run in --out")
    p.add_argument("--start-from", choices=("starter", "scratch"),
                   help="starter: fine-tune the starter model shipped with membraind; scratch: random weights "
                        "(default: starter with --model, scratch with --out)")  # fmt: skip


def register(add: Add) -> None:
    """Add the training subcommands."""
    from membraind.nn.settings import TransferMode

    p = add("train", cmd_train, "train a membrane network on (partially) annotated ground truth")
    _add_training_arguments(p)

    p = add("finetune", cmd_finetune, "fine-tune a trained model bundle on new ground truth (transfer learning)")
    _add_training_arguments(p)
    p.add_argument("--from", dest="parent", type=Path,
                   help="the parent model bundle (default: the --model's latest version, else the starter model)")  # fmt: skip
    p.add_argument("--mode", choices=TransferMode.__args__, help="what learns (default: continue)")
    p.add_argument("--leaky-factor", type=float, help="leaky: encoder learning-rate factor (default 0.1)")
    p.add_argument("--episodic-ratio", type=float, help="episodic: share of each batch from the parent's data")

    p = add("models", cmd_models, "list the lab models and their versions: when trained, from which, how well")
    p.add_argument("--models-dir", type=Path, help="the models folder (default: [service] models_dir, <home>/models)")

    p = add("export-onnx", cmd_export_onnx, "export a model bundle to ONNX (metadata embedded)")
    p.add_argument("bundle", type=Path, help="model bundle folder")
    p.add_argument("--out", type=Path, help="ONNX file (default: BUNDLE/model.onnx)")

    p = add(
        "import-model", cmd_import_model,
        "make a model bundle, or a lab model's next version, from an ONNX file or a PyTorch state dict trained elsewhere",
    )  # fmt: skip
    p.add_argument("file", type=Path, help="the network: .onnx, or a state dict (.safetensors, .pt, .pth, .ckpt)")
    p.add_argument("--out", type=Path, help="the bundle folder to make (or --model)")
    p.add_argument("--model", help="a lab model: the import becomes its next version, in the models folder")
    p.add_argument("--name", help="model name stored in the bundle (default: --model, else the file's name)")
    p.add_argument("--depth", type=int, help="state dict: U-Net depth (default: [unet] depth)")
    p.add_argument("--base-filters", type=int, help="state dict: U-Net filters of the first stage (default: [unet])")
    p.add_argument("--classes", type=int, choices=(2, 3), help="state dict: output classes (default: config)")
    p.add_argument("--class-names", help="comma-separated name of each output channel (default: interior,membrane[,third])")
    p.add_argument("--onnx-outputs", choices=("probabilities", "logits"), help="ONNX: what it outputs (default: found by running it)")
    p.add_argument("--patch-size", type=int, help="patch side the network was trained on (default 256)")
    p.add_argument("--mip", type=int, help="mip the network was trained at (default 0)")
    add_voxel_size_argument(p, "of its training data, stored in the bundle")

    p = add("evaluate", cmd_evaluate, "predict sample images, write overlays, and score them against labels")
    p.add_argument("bundle", type=Path, nargs="?", help="model bundle folder (or --model)")
    p.add_argument("--model", help="a lab model instead of a bundle: NAME (its latest version) or NAME@vN")
    p.add_argument("--models-dir", type=Path, help="the models folder (default: [service] models_dir, <home>/models)")
    p.add_argument("--em", type=Path, help="folder of EM images or a TIFF stack (or --vast)")
    p.add_argument("--labels", type=Path, help="matching labels: also print membrane F1 and pixel error")
    add_mapping_argument(p)
    add_painted_arguments(p)
    p.add_argument("--out", type=Path, default=Path("evaluation"),
                   help="folder for overlay PNGs and scores.json (default: evaluation)")  # fmt: skip
    p.add_argument("--runtime", "--engine", dest="runtime", choices=("torch", "onnx"), default="torch",
                   help="inference runtime (default: torch; --engine is its old name)")  # fmt: skip
