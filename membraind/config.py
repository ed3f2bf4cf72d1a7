"""membraind's settings: one pydantic model, from a TOML file and ``MEMBRAIND_*`` variables.

This module only composes: each section is defined in the ``settings`` module of the
package it configures (``groundtruth``, ``nn``, ``predict``, ``segment``, ``service``),
and each component is handed its own section, never the whole :class:`Settings`.

Precedence, highest first: environment variables, the TOML file, the defaults. Nested
fields use ``__`` in variable names, e.g. ``MEMBRAIND_SAMPLER__PATCH_SIZE=128`` sets
``[sampler] patch_size``. The file is named by ``--config`` or ``MEMBRAIND_CONFIG``.
Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from membraind.errors import ConfigError, describe_validation_error
from membraind.groundtruth.normalization import IntensityNormalization
from membraind.groundtruth.settings import AugmentationSettings, GroundTruthSettings, SamplerSettings
from membraind.nn.settings import TrainingSettings, TransferSettings, UNetConfig
from membraind.predict.settings import PredictSettings
from membraind.segment.settings import Segment2DSettings
from membraind.service.settings import ServiceSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ENV_PREFIX = "MEMBRAIND_"
CONFIG_ENV = "MEMBRAIND_CONFIG"


class Settings(BaseSettings):
    """Everything membraind can be configured with."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    groundtruth: GroundTruthSettings = GroundTruthSettings()
    normalization: IntensityNormalization = IntensityNormalization()
    sampler: SamplerSettings = SamplerSettings()
    augmentation: AugmentationSettings = AugmentationSettings()
    unet: UNetConfig = UNetConfig()
    training: TrainingSettings = TrainingSettings()
    transfer: TransferSettings = TransferSettings()
    predict: PredictSettings = PredictSettings()
    segment2d: Segment2DSettings = Segment2DSettings()
    service: ServiceSettings = ServiceSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init values; the environment overrides it.
        return env_settings, init_settings


def _describe(error: ValidationError, origin: str) -> str:
    return f"invalid configuration in {origin}: {describe_validation_error(error)}"


def with_overrides(model: BaseModel, origin: str, **values: Any) -> BaseModel:
    """A validated copy of ``model`` with ``values`` (those not None) replaced.

    ``model_copy(update=...)`` would skip validation; command-line options must be
    checked like settings from a file, and named in the error.
    """
    data = {**model.model_dump(), **{k: v for k, v in values.items() if v is not None}}
    try:
        return type(model).model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from None


def _check_environment() -> None:
    known = {name.upper() for name in Settings.model_fields} | {CONFIG_ENV[len(ENV_PREFIX) :]}
    for key in os.environ:
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].split("__")[0] not in known:
            raise ConfigError(
                f"environment variable {key} is not a membraind setting; known sections: "
                + ", ".join(sorted(ENV_PREFIX + k for k in known))
            )


def load_settings(path: Path | str | None = None) -> Settings:
    """Load settings from ``path`` (or ``$MEMBRAIND_CONFIG``), the environment and defaults."""
    path = path or os.environ.get(CONFIG_ENV)
    data: dict[str, Any] = {}
    origin = "the environment (MEMBRAIND_*)"
    if path:
        path = Path(path)
        origin = f"{path} or the environment (MEMBRAIND_*)"
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    _check_environment()
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from None
