"""Settings from a TOML file and MEMBRAIND_* environment variables."""

from __future__ import annotations

import pytest

from membraind.config import load_settings
from membraind.errors import ConfigError
from tests.conftest import run_cli


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("MEMBRAIND_"):
            monkeypatch.delenv(key)


def test_defaults_without_file():
    settings = load_settings()
    assert settings.sampler.patch_size is None  # chosen from the painted regions
    assert settings.groundtruth.membrane_thickness == 3
    assert settings.normalization.method == "percentile"


def test_file_then_environment(tmp_path, monkeypatch):
    path = tmp_path / "membraind.toml"
    path.write_text('[sampler]\npatch_size = 128\nseed = 3\n[groundtruth]\nlabel_mapping = "isbi"\n')
    monkeypatch.setenv("MEMBRAIND_SAMPLER__SEED", "11")
    settings = load_settings(path)
    assert settings.sampler.patch_size == 128  # from the file
    assert settings.sampler.seed == 11  # the environment wins
    assert settings.groundtruth.mapping().values == {255: 1, 0: 2}


def test_config_file_from_environment_variable(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text("[augmentation.gaussian_blur]\nprobability = 0.7\n")
    monkeypatch.setenv("MEMBRAIND_CONFIG", str(path))
    assert load_settings().augmentation.gaussian_blur.probability == 0.7


def test_label_mapping_table(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[groundtruth.label_mapping]\n0 = 0\n100 = 1\n200 = 2\n")
    assert load_settings(path).groundtruth.mapping().values == {0: 0, 100: 1, 200: 2}


def test_label_mapping_as_text_as_on_the_command_line(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text('[groundtruth]\nlabel_mapping = "0=2,255=1,128=0"\n')
    assert load_settings(path).groundtruth.mapping().values == {0: 2, 255: 1, 128: 0}
    monkeypatch.setenv("MEMBRAIND_GROUNDTRUTH__LABEL_MAPPING", "0=2,255=1,64=0")
    assert load_settings(path).groundtruth.mapping().values == {0: 2, 255: 1, 64: 0}


@pytest.mark.parametrize(
    "text, message",
    [
        ("[sampler]\npatch_sise = 128\n", "sampler.patch_sise: Extra inputs are not permitted"),
        ("[sampler]\npatch_size = 127\n", "sampler.patch_size: Input should be a multiple of 2"),
        ('[groundtruth]\nlabel_mapping = "isbl"\n', "unknown label mapping 'isbl'"),
        ('[groundtruth]\nlabel_mapping = "0=2,255=x"\n', "'255=x' is not two whole numbers GRAY=CLASS"),
        ("[groundtruth.label_mapping]\n0 = 2\n255 = 9\n", "gray value 255 maps to class 9"),
        ("[sampler\n", "is not valid TOML"),
    ],
)
def test_bad_config_names_the_field(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_predict_runtime_is_also_read_under_its_old_name_engine(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text('[predict]\nengine = "onnx"\n')
    assert load_settings(path).predict.runtime == "onnx"
    path.write_text('[predict]\nruntime = "onnx"\n')
    assert load_settings(path).predict.runtime == "onnx"
    monkeypatch.setenv("MEMBRAIND_PREDICT__ENGINE", "torch")
    with pytest.raises(ConfigError, match="set only runtime"):  # a file and the environment disagreeing
        load_settings(path)
    path.write_text('[predict]\nengine = "onnx"\n')
    assert load_settings(path).predict.runtime == "torch", "the environment wins, as for every key"
    monkeypatch.delenv("MEMBRAIND_PREDICT__ENGINE")
    monkeypatch.setenv("MEMBRAIND_PREDICT__RUNTIME", "torch")
    assert load_settings().predict.runtime == "torch"


def test_part_sections_keeps_its_older_name_chunk_sections(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text("[service.queue]\npart_sections = 5\n")
    assert load_settings(path).service.queue.sections_per_part() == 5
    path.write_text("[service.queue]\nchunk_sections = 3\n")  # the older name, in a file
    assert load_settings(path).service.queue.part_sections == 3
    monkeypatch.setenv("MEMBRAIND_SERVICE__QUEUE__CHUNK_SECTIONS", "6")  # and in the environment, which still wins
    assert load_settings(path).service.queue.sections_per_part() == 6
    path.write_text("[service.queue]\npart_sections = 5\n")
    with pytest.raises(ConfigError, match="disagree; set only part_sections"):
        load_settings(path)


def test_misspelled_environment_variable_is_an_error(monkeypatch):
    monkeypatch.setenv("MEMBRAIND_SAMPLR__SEED", "1")
    with pytest.raises(ConfigError, match="MEMBRAIND_SAMPLR__SEED is not a membraind setting"):
        load_settings()


def test_missing_file_is_one_line_on_the_cli(tmp_path):
    result = run_cli("--config", str(tmp_path / "nope.toml"), "show-config")
    assert result.returncode == 2
    assert result.stderr.strip() == f"membraind: error: configuration file {tmp_path / 'nope.toml'} does not exist"


def _field_paths(model, prefix=""):
    for name, field in model.model_fields.items():
        if hasattr(field.annotation, "model_fields"):
            yield from _field_paths(field.annotation, f"{prefix}{name}.")
        else:
            yield prefix + name


def test_every_setting_is_documented():
    from pathlib import Path

    from membraind.config import Settings

    text = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    missing = [path for path in _field_paths(Settings) if f"`{path}`" not in text]
    assert not missing, f"docs/configuration.md does not describe {missing}"


def test_service_folders_are_absolute_with_the_home_folder_as_default(tmp_path, monkeypatch):
    from pathlib import Path

    assert load_settings().service.home == Path.home() / "membraind"
    config = tmp_path / "etc" / "membraind.toml"
    config.parent.mkdir()
    config.write_text('[service]\nhome = "lab-home"\nstate_dir = "../state"\nrequest_dir = "~/drop"\nroots = ["data", "/abs"]\n')
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # relative folders are taken from the working directory when the file is loaded
    service = load_settings(config).service
    monkeypatch.chdir(tmp_path)  # and stay where they were
    assert service.home == workdir / "lab-home" and service.state_path() == workdir / ".." / "state"
    assert service.requests_path() == Path.home() / "drop" and service.roots == [workdir / "data", Path("/abs")]
    assert all(p.is_absolute() for p in service.allowed_roots())


def test_default_home_does_not_depend_on_the_working_directory(tmp_path):
    import json

    homes = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        result = run_cli("show-config", cwd=tmp_path / folder, env={"HOME": str(tmp_path / "user")})
        assert result.returncode == 0, result.stderr
        service = json.loads(result.stdout)["service"]
        homes.append(service["home"])
    assert homes == [str(tmp_path / "user" / "membraind")] * 2
