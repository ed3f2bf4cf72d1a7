"""Subcommands of the ``membraind`` command line, one module per area.

Each module has a ``register(add)`` function; ``add(name, func, help)`` creates the
subparser. Command functions take the parsed arguments and the settings and return
the exit status; they only translate arguments into library calls.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from membraind_client.progress import Progress, ProgressReporter

from membraind.config import Settings
from membraind.errors import InputError, describe_validation_error
from membraind.groundtruth.label_mapping import MAPPING_FORMS, LabelMapping, parse_mapping
from membraind.groundtruth.settings import GroundTruthSettings

Command = Callable[[argparse.Namespace, Settings], int]
Add = Callable[[str, Command, str], argparse.ArgumentParser]


def add_ground_truth_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--em``, ``--labels`` and ``--mapping``: a ground-truth data set (``required=False``:
    another source may stand in, e.g. ``--vast``)."""
    parser.add_argument("--em", type=Path, required=required, help="folder of EM images or a TIFF stack")
    parser.add_argument("--labels", type=Path, required=required, help="folder of label images or a TIFF stack")
    add_mapping_argument(parser)


def _mapping_argument(text: str) -> LabelMapping:
    """``--mapping``'s value read by :func:`~membraind.groundtruth.label_mapping.parse_mapping`."""
    try:
        return parse_mapping(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_mapping_argument(parser: argparse.ArgumentParser) -> None:
    """``--mapping``: a label mapping (preset or GRAY=CLASS pairs) overriding the configuration."""
    parser.add_argument(
        "--mapping",
        type=_mapping_argument,
        metavar="MAPPING",
        help=f"label gray values -> classes: {MAPPING_FORMS} (default: [groundtruth] label_mapping of the config)",
    )


def add_voxel_size_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--voxel-size``: X,Y,Z in nm, or one number for cubic voxels; ``what`` ends the help."""
    parser.add_argument("--voxel-size", metavar="X,Y,Z", help=f"voxel size in nm (e.g. 4,4,30; 8 = 8,8,8) {what}")


def voxel_size_argument(text: str | None) -> tuple[float, float, float] | None:
    """The ``--voxel-size`` value, read as request files read ``voxel_size_nm``; an error naming the option."""
    from membraind.volumes.voxel_size import parse_voxel_size

    if text is None:
        return None
    try:
        return parse_voxel_size(text)
    except ValueError as exc:
        raise InputError(f"--voxel-size: {exc}") from None


def mapping_from(args: argparse.Namespace, groundtruth: GroundTruthSettings) -> LabelMapping:
    """The label mapping chosen on the command line, else the configured one."""
    return getattr(args, "mapping", None) or groundtruth.mapping()


def progress_bar(unit_scale: int = 1000) -> tuple[ProgressReporter, Callable[[], None]]:
    """A tqdm bar drawn from :class:`~membraind_client.progress.Progress` reports; returns (reporter, close).

    The bar shows the fraction, the time spent and the report's own estimate of the time
    left, and the message of a step forward; a milestone's message (an epoch's score, a
    finished section) is printed above the bar, where it stays.
    """
    from tqdm import tqdm

    class Bar(tqdm):
        eta = "?"

        @property
        def format_dict(self) -> dict:
            return {**super().format_dict, "eta": self.eta}  # the job's estimate, not tqdm's own

    bar = Bar(total=unit_scale, unit="", bar_format="{l_bar}{bar}| {elapsed}<{eta}{postfix}")

    def progress(report: Progress) -> None:
        bar.n = int(report.fraction * unit_scale)
        bar.eta = report.eta or "?"
        if report.milestone:
            bar.refresh()
            bar.write(report.message)
        else:
            bar.set_postfix_str(report.message, refresh=True)

    return progress, bar.close


def spec_from_args(spec_type: type, **values: Any) -> Any:
    """A job spec from command-line values (None: not given, the configuration decides)."""
    from pydantic import ValidationError

    try:
        return spec_type(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise InputError(f"invalid {spec_type.model_fields['kind'].default} request: {describe_validation_error(exc)}") from None


def run_spec(spec: Any, settings: Settings) -> Any:
    """Run a job spec under a progress bar, print its summary and outputs, return its result."""
    from membraind.jobs.execute import run_job

    progress, close_bar = progress_bar()
    try:
        result = run_job(spec, settings, progress, lambda: False)
    finally:
        close_bar()
    print(result.summary)
    for path in result.outputs:
        print(f"output: {path}")
    return result
