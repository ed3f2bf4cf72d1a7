"""Loaded networks: a bundle made ready to predict one volume (runtime, normaliser and
outputs together), in memory. The bundles on disk that the daemon lists are
:mod:`membraind.service.model_catalog`."""

from __future__ import annotations

from dataclasses import dataclass

from membraind.nn.bundle import Bundle
from membraind.predict.normalizer import SectionNormalizer
from membraind.predict.outputs import check_outputs
from membraind.predict.runtimes import Runtime, load_runtime
from membraind.predict.settings import OutputKind, PredictSettings
from membraind.volumes.volume import Volume

__all__ = ["LoadedModel", "prepare_models"]


@dataclass
class LoadedModel:
    """Everything the pipeline needs of one bundle."""

    name: str
    runtime: Runtime
    normalizer: SectionNormalizer
    membrane_channel: int
    outputs: list[OutputKind]
    created: str = ""  # when the bundle was written (ISO 8601): the model's version in layer names
    version: int | None = None  # the lab model version it is (None: a bundle of its own)


def prepare_models(
    bundles: list[Bundle],
    volume: Volume,
    mip: int,
    settings: PredictSettings,
    runtimes: list[Runtime] | None = None,
) -> list[LoadedModel]:
    """Pair each bundle with a runtime (loaded now unless given) and ``volume``'s normaliser."""
    names = [b.metadata.name for b in bundles]
    unique = [name if names.count(name) == 1 else f"{name}-{i + 1}" for i, name in enumerate(names)]
    runtimes = runtimes or [load_runtime(b, settings) for b in bundles]
    return [
        LoadedModel(
            name=name,
            runtime=runtime,
            normalizer=SectionNormalizer(volume, mip, bundle.metadata.normalization),
            membrane_channel=bundle.metadata.membrane_channel,
            outputs=check_outputs(settings.outputs, bundle.metadata.architecture.classes, name),
            created=bundle.metadata.created,
            version=bundle.metadata.version,
        )
        for name, bundle, runtime in zip(unique, bundles, runtimes)
    ]
