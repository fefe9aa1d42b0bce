"""Nothing wrong at the edges of the data (issue 27): metadata values that look like NA are values, text
files with a BOM are read, EXIF orientation is applied and recorded, report images stay bounded at any
aspect ratio, and a comparison survives blank metadata cells."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from cnnaudit.data import decode_image, open_dataset
from cnnaudit.data.images import image_size
from cnnaudit.datauri import MAX_SIDE, thumbnail_uri, to_data_uri
from tests.conftest import read_summary, run_cli


class AnySize(nn.Module):
    """A real (untrained) classifier for any input size: conv, global average pool, linear."""

    def __init__(self, classes: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _scripted(path, seed: int = 0, classes: int = 2):
    torch.manual_seed(seed)
    torch.jit.save(torch.jit.script(AnySize(classes).eval()), str(path))
    return path


def _noise_folder(root, classes, per_class, hw=(16, 16), seed=0) -> list[str]:
    """per_class RGB noise PNGs in DATA/<class>/; their relative paths, sorted."""
    rng = np.random.default_rng(seed)
    paths = []
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8)).save(root / c / f"{i:03d}.png")
            paths.append(f"{c}/{i:03d}.png")
    return sorted(paths)


def _samples(out) -> pd.DataFrame:
    return pd.read_csv(out / "samples.csv", keep_default_na=False, low_memory=False)


# 1. NA-like values ---------------------------------------------------------------------------------------

def test_na_like_metadata_values_are_groups_and_a_class_called_none_is_a_class(tmp_path):
    root = tmp_path / "data"
    paths = _noise_folder(root, ["None", "b"], 15)
    sites = (["NA", "None", "B"] * 10)[:len(paths)]
    sites[0] = sites[1] = ""  # the only missing values: empty cells
    sites[2] = "   "  # and a cell of spaces
    pd.DataFrame({"path": paths, "site": sites}).to_csv(root / "metadata.csv", index=False)
    (root / "classes.txt").write_text("None\nb\n")
    out = tmp_path / "out"
    r = run_cli("run", _scripted(tmp_path / "m.pt"), root, "--out", out, "--checks", "subgroups",
                "--min-group-size", "2", "--limit", "30", "--quiet")
    assert r.returncode == 0, r.stderr
    summary = read_summary(out)
    assert summary["data"]["classes"] == ["None", "b"]
    groups = summary["subgroups"]["attributes"]["site"]["groups"]
    assert sorted(g["value"] for g in groups) == ["B", "NA", "None"]
    assert sum(g["n"] for g in groups) == 27  # the three blank cells are in no group...
    assert summary["subgroups"]["data_audit"]["missing_metadata"]["site"] == 3  # ...and counted as missing
    clean = _samples(out).query("condition == 'clean'")
    assert set(clean["label_name"]) == {"None", "b"} and set(clean["site"]) == {"NA", "None", "B", ""}


def test_only_empty_cells_are_missing_and_numbers_stay_numbers(tmp_path):
    root = tmp_path / "data"
    paths = _noise_folder(root, ["a"], 4)
    pd.DataFrame({"path": paths, "site": ["NA", "null", "", "nan"],
                  "age": ["3", " ", "", "5"]}).to_csv(root / "metadata.csv", index=False)
    table = open_dataset(root).table
    assert table["site"].iloc[:2].tolist() == ["NA", "null"] and table["site"].iloc[3] == "nan"
    assert pd.isna(table["site"].iloc[2])
    assert pd.api.types.is_numeric_dtype(table["age"]) and table["age"].isna().tolist() == [False, True, True, False]


# 2. byte order marks -------------------------------------------------------------------------------------

def test_classes_file_with_a_bom(tmp_path):
    root = tmp_path / "data"
    _noise_folder(root, ["a", "b"], 2)
    (root / "classes.txt").write_text("b\na\n", encoding="utf-8-sig")
    assert open_dataset(root).classes == ["b", "a"]
    listed = tmp_path / "order.txt"  # --classes FILE goes through the same reader
    listed.write_text("a\nb\n", encoding="utf-8-sig")
    assert open_dataset(root, listed).classes == ["a", "b"]


def test_metadata_csv_with_a_bom_finds_its_path_column(tmp_path):
    root = tmp_path / "data"
    paths = _noise_folder(root, ["a", "b"], 2)
    pd.DataFrame({"path": paths, "label": ["a", "a", "b", "b"], "site": ["x", "y", "x", "y"]}).to_csv(
        root / "metadata.csv", index=False, encoding="utf-8-sig")
    assert (root / "metadata.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    ds = open_dataset(root)
    assert ds.attributes == ["site"] and ds.table["label_name"].tolist() == ["a", "a", "b", "b"]


# 3. EXIF orientation -------------------------------------------------------------------------------------

def _upright(h=12, w=20) -> np.ndarray:
    """A non-square image that no rotation or mirror maps onto itself: a gradient and a corner mark."""
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    arr[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    arr[:3, :4, 2] = 255
    return arr


# How a camera stores the upright image for each EXIF orientation (the tag says how to undo it), written
# from the EXIF specification's definitions rather than from PIL's table.
STORED = {2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud, 5: lambda a: a.transpose(1, 0, 2),
          6: lambda a: np.rot90(a, 1), 7: lambda a: np.rot90(a, 2).transpose(1, 0, 2), 8: lambda a: np.rot90(a, -1)}


def _save_oriented(path, orientation: int, **kwargs):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(STORED[orientation](_upright()))).save(path, exif=exif, **kwargs)


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_exif_orientation_is_applied_when_decoding(tmp_path, orientation):
    path = tmp_path / "photo.png"
    _save_oriented(path, orientation)
    assert image_size(path) == (12, 20)
    x, _ = decode_image(path, channels=3, size=(12, 20))
    np.testing.assert_array_equal((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), _upright())


def test_exif_orientation_of_a_jpeg(tmp_path):
    path = tmp_path / "photo.jpg"
    _save_oriented(path, 6, quality=95)
    assert Image.open(path).size == (12, 20)  # stored sideways: 12 wide, 20 high
    assert image_size(path) == (12, 20)
    x, _ = decode_image(path, channels=3, size=(12, 20))
    err = np.abs(x.permute(1, 2, 0).numpy() * 255 - _upright().astype(np.float32))
    assert err.mean() < 6, err.mean()


def test_the_audit_records_the_orientation_it_applied(tmp_path):
    root = tmp_path / "data"
    _noise_folder(root, ["a", "b"], 3, hw=(12, 20))
    _save_oriented(root / "a" / "phone6.jpg", 6, quality=95)
    _save_oriented(root / "b" / "phone8.png", 8)
    out = tmp_path / "out"
    r = run_cli("run", _scripted(tmp_path / "m.pt"), root, "--out", out, "--checks", "subgroups", "--quiet")
    assert r.returncode == 0, r.stderr
    summary = read_summary(out)
    assert summary["data"]["n_exif_transposed"] == 2
    assert summary["model"]["input_shape"] == [3, 12, 20]
    rows = _samples(out)
    clean = rows.query("condition == 'clean'").set_index("path")
    assert clean["exif_orientation"].astype(int).to_dict() == {
        "a/000.png": 1, "a/001.png": 1, "a/002.png": 1, "a/phone6.jpg": 6,
        "b/000.png": 1, "b/001.png": 1, "b/002.png": 1, "b/phone8.png": 8}
    props = rows.query("condition == 'properties'").set_index("path")
    assert props.loc["a/phone6.jpg", "height"] == "12" and props.loc["a/phone6.jpg", "width"] == "20"
    assert any(f["subject"] == "EXIF orientation" for f in summary["findings"])


# 4. report images at extreme aspect ratios ---------------------------------------------------------------

def _png_sizes(html: str) -> list[tuple[int, int]]:
    return [Image.open(io.BytesIO(base64.b64decode(b))).size
            for b in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)]


@pytest.mark.parametrize("hw", [(2, 3000), (3000, 2), (1, 64), (64, 1), (28, 28)])
def test_report_images_are_bounded_at_any_aspect(hw):
    x = torch.rand(1, *hw)
    for uri, cap in [(to_data_uri(x), MAX_SIDE), (thumbnail_uri(x), 64), (thumbnail_uri(x, side=96), 96)]:
        (w, h), = _png_sizes(uri)
        assert 1 <= min(w, h) and max(w, h) <= cap, (hw, w, h, cap)
        assert (w >= h) == (hw[1] >= hw[0])  # the long side stays the long side
    assert _png_sizes(to_data_uri(torch.rand(1, 28, 28))) == [(112, 112)]  # small inputs still upscaled
    assert _png_sizes(thumbnail_uri(torch.rand(1, 28, 28))) == [(56, 56)]


def test_the_report_of_a_2_by_3000_input_has_bounded_images(tmp_path):
    root = tmp_path / "data"
    _noise_folder(root, ["a", "b"], 6, hw=(2, 3000))
    out = tmp_path / "out"
    r = run_cli("run", _scripted(tmp_path / "m.pt"), root, "--out", out, "--checks", "subgroups", "--quiet")
    assert r.returncode == 0, r.stderr
    assert read_summary(out)["model"]["input_shape"] == [3, 2, 3000]
    sizes = _png_sizes((out / "report.html").read_text())
    assert sizes and all(1 <= min(s) and max(s) <= MAX_SIDE for s in sizes), sorted(set(sizes))


# 5. comparison with blank metadata cells -----------------------------------------------------------------

def test_compare_with_blank_metadata_cells(tmp_path):
    root = tmp_path / "data"
    paths = _noise_folder(root, ["a", "b"], 30)
    site = (["NA", "B", "C"] * 20)[:len(paths)]
    for i in range(0, len(paths), 7):
        site[i] = ""
    pd.DataFrame({"path": paths, "site": site}).to_csv(root / "metadata.csv", index=False)
    a, b = _scripted(tmp_path / "a.pt", seed=0), _scripted(tmp_path / "b.pt", seed=1)
    out = tmp_path / "out"
    r = run_cli("compare", a, b, root, "--out", out, "--checks", "subgroups", "--min-group-size", "2",
                "--limit", "60", "--quiet")
    assert r.returncode == 0, r.stderr
    comparison = json.loads((out / "comparison.json").read_text())
    groups = {c["condition"]: c["n"] for c in comparison["conditions"] if c["check"] == "subgroups"}
    assert groups == {"site = B": 17, "site = C": 17, "site = NA": 17}  # the 9 blank cells: no group
    for side in ("baseline", "candidate"):
        assert sorted(g["value"] for g in read_summary(out / side)["subgroups"]["attributes"]["site"]["groups"]) \
            == ["B", "C", "NA"]
