"""Tile stores, .vsvi descriptors and tile-folder volumes, on real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from membraind.errors import InputError
from membraind.volumes import vsvi
from membraind.volumes.box import Box
from membraind.volumes.image_files import read_image
from membraind.volumes.mips import downsample
from membraind.volumes.open_volume import open_volume
from membraind.volumes.tile_store import TileStore, ids_to_rgb, rgb_to_ids
from membraind.volumes.tile_volume import TileStoreVolume
from membraind.volumes.volume import SectionStackVolume


def isbi_volume(isbi: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """Real EM of any size: ISBI sections repeated and cropped."""
    z, y, x = shape
    sections = [read_image(isbi / "train" / "image" / f"{i:02d}.png") for i in range(z)]
    reps = (-(-y // 512), -(-x // 512))
    return np.stack([np.tile(s, reps)[:y, :x] for s in sections])


def pyramid(volume: np.ndarray, mip: int, mode: str = "mean") -> np.ndarray:
    for _ in range(mip):
        volume = np.stack([downsample(section, mode) for section in volume])
    return volume


def file_stamps(root: Path) -> dict[Path, tuple[int, int]]:
    return {p.relative_to(root): (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*.png")}


def filled_store(root: Path, volume: np.ndarray, tile_size: int, **kwargs) -> TileStore:
    store = TileStore(root, volume.shape[:3], tile_size=tile_size, **kwargs)
    store.write_region(Box.from_shape(volume.shape[:3]), volume)
    store.build_pyramid()
    return store


# ------------------------------------------------------------------ round trip


@pytest.mark.parametrize(("shape", "tile_size"), [((3, 1100, 2100), 1024), ((2, 300, 530), 256)])
def test_round_trip_through_vsvi_at_every_mip(tmp_path, isbi, shape, tile_size):
    volume = isbi_volume(isbi, shape)
    store = filled_store(tmp_path / "store", volume, tile_size, voxel_size=(4, 4, 30), layer_name="em")
    path = store.write_vsvi()
    assert path == tmp_path / "store" / "em.vsvi"

    # Every PNG is a full tile, zero-padded beyond the edge.
    last = store.tile_path(0, *(n - 1 for n in store.grid(0)), 0)
    edge = read_image(last)
    assert edge.shape == (tile_size, tile_size)
    assert not edge[shape[1] % tile_size :].any() and not edge[:, shape[2] % tile_size :].any()

    read = TileStoreVolume(path)
    assert read.shape == shape and read.voxel_size == (4.0, 4.0, 30.0) and read.channels == 1
    assert read.mips == store.max_mip + 1 == 3
    np.testing.assert_array_equal(read.read(read.bounds(0)), volume)
    for mip in (1, 2):
        np.testing.assert_array_equal(read.read(read.bounds(mip)), pyramid(volume, mip))
    inner = Box(x0=tile_size - 7, x1=tile_size + 9, y0=3, y1=shape[1] - 1, z0=1, z1=2)
    np.testing.assert_array_equal(read.read(inner), volume[inner.slices()])


def test_vsvi_is_written_as_vast_writes_it_with_true_ranges(tmp_path):
    volume = np.random.default_rng(1).integers(0, 256, (3, 1100, 2100), dtype=np.uint8)
    gray = TileStore(tmp_path / "gray", volume.shape, (8, 8, 40), tile_size=1024, layer_name="membrane probability")
    gray.write_tile(0, 0, 0, 0, volume[0, :1024, :1024])
    gray.build_pyramid(range(0, 1))
    data = vsvi.parse_vsvi(gray.write_vsvi()).model_dump()
    assert (data["SourceMinS"], data["SourceMaxS"]) == (0, 2)
    assert (data["SourceMinR"], data["SourceMaxR"]) == (0, 1)
    assert (data["SourceMinC"], data["SourceMaxC"]) == (0, 2)
    assert (data["SourceMinM"], data["SourceMaxM"]) == (1, 2)  # 1100x2100 fits one tile at mip 2
    assert data["SourceBytesPerPixel"] == 1 and data["MissingImagePolicy"] == "black"
    assert (data["TargetDataSizeX"], data["TargetDataSizeY"], data["TargetDataSizeZ"]) == (2100, 1100, 3)
    assert (data["TargetVoxelSizeXnm"], data["TargetVoxelSizeZnm"]) == (8.0, 40.0)
    # As VAST writes them: relative to the .vsvi, with bare back-slashes.
    assert data["SourceFileNameTemplate"] == ".\\mip0\\Sect_%06d\\sect_%06d_r%d_c%d.png"
    assert data["MipMapFileNameTemplate"] == ".\\mip%d\\Sect_%06d\\sect_%06d_r%d_c%d.png"
    assert b'".\\mip0\\Sect_%06d' in gray.write_vsvi().read_bytes()  # literally, not JSON-escaped
    assert (data["SourceParamSequence"], data["MipMapParamSequence"]) == ("ssrc", "mssrc")
    assert data["TargetLayerName"] == "membrane probability" and data["ServerType"] == "imagetiles"
    assert set(data) >= set(vsvi.VsviDescriptor.model_fields) - {"SourceSectionOrder"}

    rgb = TileStore(tmp_path / "rgb", (1, 100, 100), channels=3, tile_size=64, layer_name="rgb")
    data = vsvi.parse_vsvi(rgb.write_vsvi()).model_dump()
    assert data["SourceBytesPerPixel"] == 3
    assert (data["SourceMinM"], data["SourceMaxM"]) == (0, 0)  # no pyramid written yet: 0/0, as public descriptors


def test_vsvi_names_are_plain_windows_text(tmp_path):
    store = TileStore(tmp_path / "store", (1, 100, 100), tile_size=64, layer_name="Rücken-Gehirn 神")
    raw = store.write_vsvi(tmp_path / "store" / "layer.vsvi").read_bytes()
    assert b'"TargetLayerName": "R\xfccken-Gehirn ?"' in raw  # VAST reads the file literally, in cp1252
    assert b"\\u" not in raw
    assert vsvi.parse_vsvi(tmp_path / "store" / "layer.vsvi").TargetLayerName == "Rücken-Gehirn ?"


def test_rgb_store_round_trip(tmp_path, isbi):
    gray = isbi_volume(isbi, (1, 200, 150))
    volume = np.stack([gray, 255 - gray, gray // 2], axis=-1)
    store = filled_store(tmp_path / "rgb", volume, 64, channels=3)
    read = TileStoreVolume(store.write_vsvi())
    assert read.channels == 3
    np.testing.assert_array_equal(read.read(read.bounds(0)), volume)
    np.testing.assert_array_equal(read.read(read.bounds(1))[0], downsample(volume[0]))


def test_vsvi_written_elsewhere_points_back_at_the_tiles(tmp_path):
    volume = np.arange(2 * 70 * 90, dtype=np.uint32).reshape(2, 70, 90).astype(np.uint8)
    store = filled_store(tmp_path / "deep" / "store", volume, 32)
    path = store.write_vsvi(tmp_path / "layers" / "x.vsvi")
    assert vsvi.parse_vsvi(path).SourceFileNameTemplate.startswith("..\\deep\\store\\mip0\\")
    np.testing.assert_array_equal(open_volume(path).read(Box.from_shape(volume.shape)), volume)


# ------------------------------------------------------------------ VAST-style descriptors

VAST_STYLE = """{
  \u201cComment\u201d: \u201cexported by VAST \u2018as is\u2019\u201d,
  \u201cServerType\u201d: \u201cimagetiles\u201d,
  \u201cSourceFileNameTemplate\u201d: \u201c.\\tiles\\%04d_Section *\\%04d_Section *_tr%d-tc%d.png\u201d,
  \u201cSourceParamSequence\u201d: \u201cssrc\u201d,
  \u201cSourceMinS\u201d: 1, \u201cSourceMaxS\u201d: 2,
  \u201cSourceMinR\u201d: 1, \u201cSourceMaxR\u201d: 2,
  \u201cSourceMinC\u201d: 1, \u201cSourceMaxC\u201d: 3,
  \u201cMipMapFileNameTemplate\u201d: \u201c.\\tiles\\mip%d\\%04d_Section *\\%04d_Section *_tr%d-tc%d.png\u201d,
  \u201cMipMapParamSequence\u201d: \u201cmssrc\u201d,
  \u201cSourceMinM\u201d: 1, \u201cSourceMaxM\u201d: 1,
  \u201cSourceTileSizeX\u201d: 64, \u201cSourceTileSizeY\u201d: 64,
  \u201cSourceBytesPerPixel\u201d: 1,
  \u201cMissingImagePolicy\u201d: \u201cBlack\u201d,
  \u201cTargetDataSizeX\u201d: 150, \u201cTargetDataSizeY\u201d: 100, \u201cTargetDataSizeZ\u201d: 2,
  \u201cTargetVoxelSizeXnm\u201d: 6, \u201cTargetVoxelSizeYnm\u201d: 6, \u201cTargetVoxelSizeZnm\u201d: 30,
  \u201cTargetLayerName\u201d: \u201cEM\u201d,
  \u201cVastVersion\u201d: \u201c1.4\u201d
}
"""


def vast_export(folder: Path, volume: np.ndarray, tile: int = 64) -> None:
    """Tiles the way VAST exports them: 1-based, wildcard-style names, edge tiles cut short."""
    for mip in (0, 1):
        data = pyramid(volume, mip)
        for z, section in enumerate(data):
            s = z + 1
            base = folder / "tiles" / (f"mip{mip}" if mip else "") / f"{s:04d}_Section {10 * s}a"
            base.mkdir(parents=True)
            for r in range(-(-section.shape[0] // tile)):
                for c in range(-(-section.shape[1] // tile)):
                    piece = section[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile]
                    Image.fromarray(piece).save(base / f"{s:04d}_Section {10 * s}a_tr{r + 1}-tc{c + 1}.png")


@pytest.mark.parametrize("variant", ["curly-quotes-backslashes", "cp1252-trailing-comma"])
def test_reads_vast_style_vsvi_with_wildcards_and_one_based_tiles(tmp_path, isbi, variant):
    volume = isbi_volume(isbi, (2, 100, 150))
    vast_export(tmp_path, volume)
    text = VAST_STYLE
    path = tmp_path / "export.vsvi"
    if variant == "cp1252-trailing-comma":
        path.write_bytes(text.replace('\u201c1.4\u201d\n', '\u201c1.4\u201d,\n').encode("cp1252"))
    else:
        path.write_text(text, encoding="utf-8")

    descriptor = vsvi.parse_vsvi(path)
    assert descriptor.SourceFileNameTemplate == ".\\tiles\\%04d_Section *\\%04d_Section *_tr%d-tc%d.png"
    assert descriptor.MissingImagePolicy == "black" and descriptor.model_extra == {"VastVersion": "1.4"}
    assert descriptor.Comment == "exported by VAST 'as is'"

    read = open_volume(path)
    assert isinstance(read, TileStoreVolume)
    assert read.shape == (2, 100, 150) and read.mips == 2 and read.voxel_size == (6.0, 6.0, 30.0)
    np.testing.assert_array_equal(read.read(read.bounds(0)), volume)
    np.testing.assert_array_equal(read.read(read.bounds(1)), pyramid(volume, 1))
    assert read.mtime(read.bounds(0)) is not None

    # Rewritten by membraind (as VAST writes descriptors), it reads the same.
    strict = vsvi.write_vsvi(tmp_path / "strict.vsvi", descriptor)
    data = vsvi.parse_vsvi(strict).model_dump()
    assert data["SourceFileNameTemplate"] == ".\\tiles\\%04d_Section *\\%04d_Section *_tr%d-tc%d.png"
    np.testing.assert_array_equal(TileStoreVolume(strict).read(read.bounds(0)), volume)


def test_wildcard_folders_are_listed_once(tmp_path, monkeypatch):
    folder = tmp_path / "Section 7 (aligned)"
    folder.mkdir()
    for i in range(400):
        (folder / f"t_{i:04d}_v2.png").touch()
    descriptor = vsvi.VsviDescriptor(SourceFileNameTemplate="Section *\\t_%04d_*.png", SourceParamSequence="c")
    paths = vsvi.TilePaths(descriptor, tmp_path / "x.vsvi")
    calls = []
    real_scandir = vsvi.os.scandir
    monkeypatch.setattr(vsvi.os, "scandir", lambda p: calls.append(p) or real_scandir(p))
    for i in range(400):
        assert paths.path(0, 0, i) == folder / f"t_{i:04d}_v2.png"
    assert paths.path(0, 0, 400) is None
    assert len(calls) == 2  # the .vsvi folder once, the section folder once


def test_templates_repeat_letters():
    assert vsvi.expand_template("m%d/s%03d_r%d/s%03d_r%d_c%d", "msrsrc", s=4, r=2, c=9, m=1) == "m1/s004_r2/s004_r2_c9"


def test_json_valid_windows_escapes_are_read_as_folders(tmp_path):
    # "\t" and "\n" are legal JSON escapes, but in a VAST path they are folder separators.
    path = tmp_path / "x.vsvi"
    path.write_text('{"SourceFileNameTemplate": ".\\tiles\\new\\%d.png", "SourceParamSequence": "s"}')
    assert vsvi.parse_vsvi(path).SourceFileNameTemplate == ".\\tiles\\new\\%d.png"


# ------------------------------------------------------------------ missing tiles


@pytest.mark.parametrize("policy", ["black", "white", "nearest"])
def test_missing_image_policy(tmp_path, isbi, policy):
    volume = isbi_volume(isbi, (1, 128, 128))
    store = filled_store(tmp_path / "s", volume, 64)
    store.tile_path(0, 1, 1, 0).unlink()
    descriptor = store.descriptor().model_copy(update={"MissingImagePolicy": policy})
    read = TileStoreVolume(vsvi.write_vsvi(tmp_path / "s" / "p.vsvi", descriptor))
    got = read.read(read.bounds(0))[0]
    expected = {"black": 0, "white": 255, "nearest": volume[0, :64, 64:]}[policy]  # nearest: (0, 1)
    np.testing.assert_array_equal(got[64:, 64:], np.broadcast_to(expected, (64, 64)))
    np.testing.assert_array_equal(got[:64], volume[0, :64])


# ------------------------------------------------------------------ partial updates


def test_write_region_keeps_the_rest_of_partly_covered_tiles(tmp_path, isbi):
    volume = isbi_volume(isbi, (2, 150, 200))
    store = filled_store(tmp_path / "s", volume, 64)
    box = Box(x0=40, x1=100, y0=30, y1=90, z0=1, z1=2)
    patch = np.full(box.shape, 7, np.uint8)
    written = store.write_region(box, patch)
    assert len(written) == 4
    expected = volume.copy()
    expected[box.slices()] = 7
    np.testing.assert_array_equal(store.read_region(Box.from_shape(volume.shape)), expected)

    fresh = TileStore(tmp_path / "fresh", volume.shape, tile_size=64)
    fresh.write_region(box, patch)
    region = fresh.read_region(Box.from_shape(volume.shape))
    assert region.sum() == 7 * patch.size and fresh.read_tile(0, 0, 0) is None


def test_pyramid_update_rewrites_only_touched_tiles(tmp_path, isbi):
    volume = isbi_volume(isbi, (2, 256, 512))
    store = filled_store(tmp_path / "s", volume, 64)
    assert store.max_mip == 3
    before = file_stamps(store.root)
    assert len(before) == 2 * (4 * 8 + 2 * 4 + 1 * 2 + 1)

    box = Box(x0=10, x1=20, y0=70, y1=80, z0=1, z1=2)  # inside mip-0 tile (1, 0) of section 1
    store.write_region(box, np.zeros(box.shape, np.uint8))
    assert store.build_pyramid(range(1, 2), region=box) == 3
    after = file_stamps(store.root)
    changed = {p for p in before if before[p] != after[p]}
    touched = [(0, 1), (1, 0), (2, 0), (3, 0)]  # (mip, row), column 0
    expected = {store.tile_path(1, row, 0, mip).relative_to(store.root) for mip, row in touched}
    assert changed == expected

    updated = volume.copy()
    updated[box.slices()] = 0
    for mip in (1, 2, 3):
        np.testing.assert_array_equal(store.read_region(store.bounds(mip)), pyramid(updated, mip))


# ------------------------------------------------------------------ segmentations


def test_segment_ids_round_trip_through_rgb():
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 1_234_567, 2**24 - 1]])
    rgb = ids_to_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 4, 3)
    assert tuple(rgb[1, 2]) == (1_234_567 >> 16, (1_234_567 >> 8) & 255, 1_234_567 & 255)
    np.testing.assert_array_equal(rgb_to_ids(rgb), ids)
    with pytest.raises(ValueError, match="0..16777215"):
        ids_to_rgb(np.array([2**24]))


def test_segmentation_store_uses_rgb_tiles_and_nearest_pyramid(tmp_path):
    rng = np.random.default_rng(3)
    blocks = rng.integers(1, 2**24, (1, 13, 17))
    ids = np.kron(blocks, np.ones((1, 8, 8), np.int64))[:, :100, :130]
    store = filled_store(tmp_path / "seg", ids, 64, kind="segmentation", channels=3)
    assert store.read_tile(0, 1, 2).dtype == np.uint32
    np.testing.assert_array_equal(store.read_region(store.bounds(0)), ids)
    for mip in (1, 2):
        np.testing.assert_array_equal(store.read_region(store.bounds(mip)), pyramid(ids, mip, "nearest"))
        assert set(np.unique(store.read_region(store.bounds(mip)))) <= set(np.unique(ids))

    read = TileStoreVolume(store.write_vsvi())
    assert read.descriptor.SourceBytesPerPixel == 3
    np.testing.assert_array_equal(rgb_to_ids(read.read(read.bounds(1))), ids[:, ::2, ::2])


def test_downsample_modes():
    image = np.array([[0, 10, 20], [30, 40, 50], [60, 70, 80]], np.uint8)
    np.testing.assert_array_equal(downsample(image, "nearest"), [[0, 20], [60, 80]])
    np.testing.assert_array_equal(downsample(image), downsample(image, "mean"))
    np.testing.assert_array_equal(downsample(image), [[20, 35], [65, 80]])


# ------------------------------------------------------------------ errors and opening


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{\n "SourceParamSequence": "s",\n SourceFileNameTemplate = x\n}', ["line 3"]),
        ('{"SourceParamSequence": "s", "SourceMaxS": abc,\n}', ["SourceMaxS", "line 1"]),
        ('{"SourceParamSequence": "s"}', ["SourceFileNameTemplate", "required"]),
        ('{"SourceFileNameTemplate": "a%d_%d.png", "SourceParamSequence": "s"}', ["SourceFileNameTemplate", "2 place"]),
        ('{"SourceFileNameTemplate": "a.png", "SourceParamSequence": "", "MissingImagePolicy": "grey"}', ["Missing"]),
        ("", ["holds no keys"]),
    ],
)
def test_bad_vsvi_names_the_file_and_the_fault(tmp_path, text, words):
    path = tmp_path / "broken.vsvi"
    path.write_text(text)
    with pytest.raises(InputError) as error:
        vsvi.parse_vsvi(path)
    assert str(path) in str(error.value)
    for word in words:
        assert word in str(error.value)


def test_windows_absolute_template_is_refused_with_advice(tmp_path):
    path = tmp_path / "m.vsvi"
    path.write_text('{"SourceFileNameTemplate": "C:\\probs\\mip0\\%d.png", "SourceParamSequence": "s"}')
    with pytest.raises(InputError, match="relative to the .vsvi"):
        TileStoreVolume(path)


def test_open_volume_picks_the_reader(tmp_path, isbi):
    assert isinstance(open_volume(isbi / "train" / "image"), SectionStackVolume)
    assert open_volume(isbi / "train" / "image" / "00.png").shape == (1, 512, 512)
    store = filled_store(tmp_path / "store", isbi_volume(isbi, (1, 80, 80)), 64)
    store.write_vsvi()
    assert isinstance(open_volume(store.root, voxel_size=(2, 2, 2)), TileStoreVolume)
    assert open_volume(store.root, voxel_size=(2, 2, 2)).voxel_size == (2, 2, 2)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="a .vsvi file, a folder of PNG/TIFF sections"):
        open_volume(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="does not exist"):
        open_volume(tmp_path / "nothing.vsvi")
