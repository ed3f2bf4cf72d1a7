"""Loaded networks: a bundle made ready to predict one volume (engine, normaliser and
outputs together), in memory. The bundles on disk that the daemon lists are
:mod:`membraind.service.model_catalog`."""

from __future__ import annotations

from dataclasses import dataclass

from membraind.nn.bundle import Bundle
from membraind.predict.engines import Engine, load_engine
from membraind.predict.normalizer import SectionNormalizer
from membraind.predict.outputs import check_outputs
from membraind.predict.settings import OutputKind, PredictSettings
from membraind.volumes.volume import Volume

__all__ = ["LoadedModel", "prepare_models"]


@dataclass
class LoadedModel:
    """Everything the pipeline needs of one bundle."""

    name: str
    engine: Engine
    normalizer: SectionNormalizer
    membrane_channel: int
    outputs: list[OutputKind]


def prepare_models(
    bundles: list[Bundle],
    volume: Volume,
    mip: int,
    settings: PredictSettings,
    engines: list[Engine] | None = None,
) -> list[LoadedModel]:
    """Pair each bundle with an engine (loaded now unless given) and ``volume``'s normaliser."""
    names = [b.metadata.name for b in bundles]
    unique = [name if names.count(name) == 1 else f"{name}-{i + 1}" for i, name in enumerate(names)]
    engines = engines or [load_engine(b, settings) for b in bundles]
    return [
        LoadedModel(
            name=name,
            engine=engine,
            normalizer=SectionNormalizer(volume, mip, bundle.metadata.normalization),
            membrane_channel=bundle.metadata.membrane_channel,
            outputs=check_outputs(settings.outputs, bundle.metadata.architecture.classes, name),
        )
        for name, bundle, engine in zip(unique, bundles, engines)
    ]
