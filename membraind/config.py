"""membraind's settings: one pydantic model, from a TOML file and ``MEMBRAIND_*`` variables.

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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from membraind.errors import ConfigError, describe_validation_error
from membraind.groundtruth.augment import AugmentationSettings
from membraind.groundtruth.label_mapping import PRESETS, LabelMapping
from membraind.groundtruth.normalization import IntensityNormalization
from membraind.nn.architecture import UNetConfig
from membraind.nn.train_settings import TrainingSettings, TransferSettings
from membraind.predict.settings import PredictSettings
from membraind.segment.settings import Segment2DSettings
from membraind.service.settings import ServiceSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ENV_PREFIX = "MEMBRAIND_"
CONFIG_ENV = "MEMBRAIND_CONFIG"


class GroundTruthSettings(BaseModel):
    """Label import and ground-truth conversions."""

    model_config = ConfigDict(extra="forbid")

    label_mapping: str | dict[int, int] = Field(
        "classes",
        description=f"a preset ({', '.join(PRESETS)}) or a table of gray value -> class",
    )
    membrane_thickness: int = Field(3, ge=1, description="instance -> membrane: membrane width in pixels")
    fill_ecs: bool = Field(False, description="instance -> membrane: id 0 becomes membrane (else unannotated)")
    skeleton_tube_radius: float = Field(4.0, gt=0, description="membrane -> skeleton: backbone tube radius (px)")

    @field_validator("label_mapping")
    @classmethod
    def _known_preset(cls, value: str | dict[int, int]) -> str | dict[int, int]:
        if isinstance(value, str) and value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; choose one of {', '.join(PRESETS)} or give a table")
        return value

    def mapping(self) -> LabelMapping:
        """The configured :class:`LabelMapping`."""
        if isinstance(self.label_mapping, str):
            return LabelMapping.preset(self.label_mapping)
        return LabelMapping(values=self.label_mapping)


class SamplerSettings(BaseModel):
    """The partial-annotation patch sampler."""

    model_config = ConfigDict(extra="forbid")

    patch_size: int = Field(128, ge=16, multiple_of=2, description="patch side in pixels (the network input)")
    angle_step: float = Field(5.0, gt=0, le=90, description="width of the angle bins whose valid centres are cached")
    seed: int = Field(0, description="random seed: the same seed draws the same patches")


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
