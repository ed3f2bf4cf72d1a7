"""``membraind vast-check`` through the real command line against the emulator over TCP.

The emulator serves two ISBI sections (500 x 300 pixels) and one annotation layer; the
check runs in a subprocess, as a lab runs it against its VAST.
"""

from __future__ import annotations

import socket

import pytest

from membraind.vast.check import CheckReport
from membraind.vast.client import VastClient
from membraind.vast.emulator import VastEmulator
from membraind.vast.skeletons import AnnotationLayerData
from membraind.volumes.image_files import read_image, write_image
from tests.conftest import run_cli

TIMEOUT = 10.0
ANNOTATION = AnnotationLayerData.model_validate({"name": "anchors", "objects": [
    {"id": 1, "name": "axon", "nodes": [{"x": 10, "y": 10, "z": 0, "parent": None}, {"x": 100, "y": 40, "z": 1, "parent": 0}]},
    {"id": 3, "name": "dendrite", "nodes": [{"x": 400, "y": 250, "z": 1, "parent": None}]},
]})  # fmt: skip


@pytest.fixture(scope="module")
def em_folder(isbi, tmp_path_factory):
    folder = tmp_path_factory.mktemp("check-em")
    for z in range(2):
        write_image(folder / f"{z:02d}.png", read_image(isbi / "train" / "image" / f"{z:02d}.png")[:300, :500])
    return folder


def _check(port: int, *options: str):
    result = run_cli("vast-check", f"vast://127.0.0.1:{port}", *options)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_check_against_the_emulator_matches_everything_and_leaves_the_user_as_they_were(em_folder, tmp_path):
    with VastEmulator(em_folder, skeletons=[ANNOTATION]) as emulator, VastClient("127.0.0.1", emulator.port, timeout=TIMEOUT) as client:
        with client.api_layer(1):
            client.select_anno_object(3)  # the user's selected skeleton; object 2 is a deleted slot
        client.select_layer(1)  # and the user's selected layer, the annotation layer (LOADLAYER inserts after it)
        before = (client.selected_layers(), client.view_position(), client.api_layers_enabled(), client.layers())
        result = _check(emulator.port, "--report", str(tmp_path / "report.json"), "--scratch", str(tmp_path / "scratch"),
                        "--em-layer", "EM", "--anno-layer", "1")  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        report = CheckReport.model_validate_json((tmp_path / "report.json").read_text(encoding="utf-8"))
        assert [(row.check, row.status) for row in report.rows if row.status != "ok"] == []
        assert {row.check for row in report.rows} >= {
            "API version (GETAPIVERSION)", "Mip scale factors (GETMIPMAPSCALEFACTORS)", "EM read at mip 1",
            "Skeleton nodes (GETAONODEDATA)", "Selected skeleton kept (GETSELECTEDANNOOBJECTNR)",
            "Layer name from the .vsvi, in cp1252", "REFRESHLAYERREGION re-reads changed tiles",
        }  # fmt: skip
        loaded = next(row for row in report.rows if row.check == "LOADLAYER of a generated .vsvi")
        assert loaded.seen.startswith("layer 2 (image) of 4 (were 3)")  # right after the selected layer, above segmentation
        assert f"{len(report.rows)} ok, 0 warn, 0 fail: everything membraind relies on matched" in result.stdout
        # The test layer came and went; the selection, the view and the API-layer switch are as they were.
        assert [call[0] for call in emulator.calls] == ["LOADLAYER", "REFRESHLAYERREGION", "REMOVELAYER"]
        assert (client.selected_layers(), client.view_position(), client.api_layers_enabled(), client.layers()) == before
        with client.api_layer(1):
            assert client.selected_anno_object() == 3
        assert emulator.vast.object_selections[0] == 3 and emulator.vast.object_selections[-1] == 3


def test_check_names_what_an_older_vast_lacks_and_exits_1(em_folder, tmp_path):
    with VastEmulator(em_folder, skeletons=[ANNOTATION], api_version=3) as emulator:  # VASTControlClass 3: VAST Lite 1.2
        result = _check(emulator.port, "--report", str(tmp_path / "report.json"))
    assert result.returncode == 1, result.stdout + result.stderr
    report = CheckReport.model_validate_json((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert [row.check for row in report.failed] == ["API version (GETAPIVERSION)"]
    assert "fail  API version (GETAPIVERSION): 3" in result.stdout
    assert "please send this report" in result.stdout
    # Nothing selected in the annotation layer: node reading is not tried, so as not to leave a skeleton selected.
    assert [row.check for row in report.rows if row.status == "warn"] == ["Skeleton nodes (GETAONODEDATA)"]


def test_check_of_an_unreachable_vast_says_so_in_one_line_and_exits_2():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = _check(port)
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert f"cannot connect to VAST at 127.0.0.1:{port}" in line and "Remote Control API Server > Enable" in line


def test_check_against_vast_on_windows_goes_through_the_path_mapping(em_folder, tmp_path):
    from membraind.vast.paths import PathMap

    lab = tmp_path / "lab"
    lab.mkdir()
    windows = [PathMap(daemon=lab, vast="Z:\\lab")]
    with VastEmulator(em_folder, skeletons=[ANNOTATION], windows_paths=windows) as emulator:
        unmapped = _check(emulator.port, "--report", str(tmp_path / "unmapped.json"))
        assert unmapped.returncode == 1  # the daemon's own path: VAST on Windows cannot open it
        report = CheckReport.model_validate_json((tmp_path / "unmapped.json").read_text(encoding="utf-8"))
        (load,) = [row for row in report.rows if row.check == "LOADLAYER of a generated .vsvi"]
        assert load.status == "fail" and "--vast-path DAEMON=VAST" in load.seen
        mapped = _check(emulator.port, "--vast-path", f"{lab}=Z:\\lab", "--report", str(tmp_path / "mapped.json"))
        assert mapped.returncode == 0, mapped.stdout + mapped.stderr
        (load,) = [call for call in emulator.calls if call[0] == "LOADLAYER"][-1:]
        assert load[1].startswith("Z:\\lab\\.membraind-vast-check-") and load[1].endswith("membraind-vast-check.vsvi")
        assert list(lab.iterdir()) == []  # the test layer's files are gone again
