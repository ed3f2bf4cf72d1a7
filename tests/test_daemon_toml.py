"""The daemon configuration writer: what it writes reads back as the dict it was given."""

from __future__ import annotations

import sys
from pathlib import Path

from membraind.config import load_settings
from membraind.daemon_toml import daemon_toml, ipc_api, merged, write_daemon_toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_every_value_type_reads_back_unchanged():
    config = {
        "top": 1,
        "service": {
            "home": "/lab/home",
            "roots": ["/a", 'quote " and \\ backslash', "tab\tnew\nline", "é ü \x7f \x01"],
            "flag": True, "off": False, "ratio": 0.2, "tiny": 1e-7, "big": 2**40, "negative": -3,
            "api": {"endpoint": "tcp://127.0.0.1:5571"},
            "scope": [{"folder": "/s1", "bundles": ["/b"]}, {"folder": "/s2", "nested": {"deep": 1}}],
            "empty": {},
        },
        "odd key.with dots": {"x y": [1, 2.5, "three", [4]]},
    }
    assert tomllib.loads(daemon_toml(config)) == config


def test_paths_are_written_as_text_and_a_comment_leads():
    text = daemon_toml({"service": {"home": Path("/lab/home"), "roots": [Path("/data")]}}, comment="one\ntwo")
    assert text.startswith("# one\n# two\n")
    assert tomllib.loads(text) == {"service": {"home": "/lab/home", "roots": ["/data"]}}


def test_overrides_merge_tables_and_replace_other_values():
    base = {"service": {"home": "/h", "roots": ["/a"], "queue": {"backend": "redis", "prefix": "p"}}, "predict": {"device": "cpu"}}
    over = {"service": {"roots": ["/b", "/c"], "queue": {"prefix": "q"}}, "unet": {"depth": 3}}
    assert merged(base, over) == {
        "service": {"home": "/h", "roots": ["/b", "/c"], "queue": {"backend": "redis", "prefix": "q"}},
        "predict": {"device": "cpu"}, "unet": {"depth": 3},
    }  # fmt: skip
    assert base["service"]["queue"]["prefix"] == "p", "the base is left as it was"


def test_a_written_file_is_a_daemon_configuration(tmp_path):
    path = write_daemon_toml(
        tmp_path / "membraind.toml",
        {"service": {"home": tmp_path / "home", "api": ipc_api(tmp_path)}, "predict": {"device": "cpu"}},
        {"service": {"queue": {"serve_runs_jobs": False}}, "predict": {"tile_size": 128}},
    )  # fmt: skip
    settings = load_settings(path)
    assert settings.service.api.endpoint == f"ipc://{tmp_path}/api.sock"
    assert settings.service.api.events == f"ipc://{tmp_path}/events.sock"
    assert settings.service.queue.serve_runs_jobs is False
    assert settings.predict.device == "cpu" and settings.predict.tile_size == 128
