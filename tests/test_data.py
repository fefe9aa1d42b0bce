"""Any image file becomes a [0, 1] tensor; bad files are skipped and listed; bad datasets fail clearly."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import cnnaudit
from cnnaudit.data import decode_image, open_dataset, stratified_subset
from cnnaudit.errors import AuditError


def audit(*args, **kwargs):
    """The clean evaluation only: these tests are about loading models and data, not about the checks."""
    return cnnaudit.audit(*args, checks=[], **kwargs)


def copy_dataset(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("mode,channels", [("RGB", 3), ("RGBA", 3), ("L", 1), ("P", 3), ("I;16", 1), ("1", 1), ("CMYK", 3)])
def test_decode_any_mode_to_unit_range(tmp_path, mode, channels):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    if mode == "I;16":
        img = Image.fromarray(base[..., 0].astype(np.uint16) * 257)
        path = tmp_path / "img16.png"
    else:
        img = Image.fromarray(base, "RGB").convert(mode)
        path = tmp_path / f"img.{'jpg' if mode == 'CMYK' else 'png'}"
    img.save(path)
    for want in (1, 3):
        x, clipped = decode_image(path, channels=want, size=(16, 16))
        assert x.shape == (want, 16, 16) and x.dtype == torch.float32
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert not clipped
    if mode == "I;16":  # 16-bit precision is kept, not truncated to 8 bits
        x, _ = decode_image(path, channels=1, size=(20, 30))
        np.testing.assert_allclose(x[0].numpy(), base[..., 0] / 255.0, atol=1e-5)


def test_alpha_is_dropped_like_torchvision(tmp_path):
    arr = np.zeros((4, 4, 4), dtype=np.uint8)
    arr[..., 0] = 200
    arr[..., 3] = 0  # fully transparent
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    x, _ = decode_image(tmp_path / "a.png", channels=3, size=(4, 4))
    assert torch.allclose(x[0], torch.full((4, 4), 200 / 255))


@pytest.fixture
def messy_dir(tmp_path, digits_dir):
    root = copy_dataset(digits_dir, tmp_path / "messy")
    good = next((root / "3").glob("*.png"))
    (root / "3" / "truncated.png").write_bytes(good.read_bytes()[:60])
    (root / "3" / "notes.txt").write_text("not an image")
    Image.new("L", (200, 200)).save(root / "5" / "huge.png")
    return root


def test_bad_files_are_skipped_counted_and_listed(messy_dir):
    from cnnaudit.demo import DigitsCNN
    result = audit(DigitsCNN(), messy_dir, input_size=(32, 32), max_pixels=10_000)
    data = result.summary["data"]
    assert data["n_files"] == 303 and data["n_samples"] == 300 and data["n_skipped"] == 3
    reasons = {s["path"]: s["reason"] for s in data["skipped"]}
    assert "truncated" in reasons["3/truncated.png"]
    assert "not an image" in reasons["3/notes.txt"]
    assert "decompression bomb" in reasons["5/huge.png"] and "--max-pixels" in reasons["5/huge.png"]
    assert any(f["kind"] == "data" and "3 file(s) could not be read" in f["title"]
               for f in result.summary["findings"])
    html = result.html()
    assert "3/truncated.png" in html and "notes.txt" in html
    assert set(result.samples["path"]).isdisjoint(reasons)


def test_empty_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AuditError, match="has no images"):
        open_dataset(tmp_path / "empty")


def test_all_files_unreadable(tmp_path):
    for name in ("cat", "dog"):  # two classes: a model with one output is a binary head
        (tmp_path / "d" / name).mkdir(parents=True)
        (tmp_path / "d" / name / "x.png").write_text("nope")
    from torch import nn
    with pytest.raises(AuditError, match="could be read"):
        audit(nn.Sequential(nn.Flatten(), nn.LazyLinear(2)), tmp_path / "d", input_size=(8, 8))


def test_class_count_mismatch(torchscript_path, tmp_path, digits_dir):
    root = copy_dataset(digits_dir, tmp_path / "d")
    (root / "classes.txt").write_text("\n".join(str(i) for i in range(11)) + "\n")
    with pytest.raises(AuditError, match="10 outputs but the data has 11 classes"):
        audit(torchscript_path, root)


def test_label_not_among_classes(tmp_path, digits_dir):
    root = copy_dataset(digits_dir, tmp_path / "d")
    (root / "classes.txt").write_text("\n".join(str(i) for i in range(9)) + "\n")
    with pytest.raises(AuditError, match="Label '9' \\(class folder\\) is not among the 9 classes"):
        open_dataset(root)


def test_csv_layout_with_integer_labels_sorted_numerically(tmp_path, digits_dir):
    root = tmp_path / "csvdata"
    (root / "imgs").mkdir(parents=True)
    meta = pd.read_csv(digits_dir / "metadata.csv").head(60)
    labels = []
    for i, p in enumerate(meta["path"]):
        shutil.copy(digits_dir / p, root / "imgs" / f"{i}.png")
        labels.append(p.split("/")[0])
    labels = [str(int(lab) + 5) for lab in labels]  # 5..14: string sorting would put '10' before '5'
    pd.DataFrame({"path": [f"imgs/{i}.png" for i in range(60)], "label": labels, "site": "x"}).to_csv(
        root / "metadata.csv", index=False)
    ds = open_dataset(root)
    assert ds.layout == "csv" and ds.classes[:3] == ["5", "6", "7"] and ds.attributes == ["site"]
    assert (ds.table["label"] == ds.table["label_name"].astype(int) - 5).all()
    (root / "metadata.csv").write_text("path,label\nimgs/0.png,\n")
    with pytest.raises(AuditError, match="row 2 has an empty 'label'"):
        open_dataset(root)


@pytest.mark.parametrize("bad_path,message", [
    ("3/does-not-exist.png", "do not exist"),
    ("../outside.png", "points outside the data folder"),
    ("/etc/passwd", "is absolute"),
    ("3/../../outside.png", "points outside the data folder"),
])
def test_metadata_paths_are_checked(tmp_path, digits_dir, bad_path, message):
    root = copy_dataset(digits_dir, tmp_path / "d")
    (tmp_path / "outside.png").write_bytes(b"x")
    meta = pd.read_csv(root / "metadata.csv")
    meta.loc[len(meta)] = {"path": bad_path, "scanner": "A", "ruler": 0}
    meta.to_csv(root / "metadata.csv", index=False)
    with pytest.raises(AuditError, match=message):
        open_dataset(root)


def test_metadata_columns_join_onto_images(digits_dir):
    ds = open_dataset(digits_dir)
    assert ds.attributes == ["scanner", "ruler", "ruler_box"]
    assert ds.table["scanner"].notna().all()
    meta = pd.read_csv(digits_dir / "metadata.csv").set_index("path")
    row = ds.table.iloc[17]
    assert meta.loc[row["path"], "scanner"] == row["scanner"]


def test_limit_is_stratified_and_seeded(digits_dir):
    table = open_dataset(digits_dir).table
    sub = stratified_subset(table, 100, seed=1)
    assert len(sub) == 100
    full = table["label"].value_counts(normalize=True).sort_index()
    got = sub["label"].value_counts().sort_index()
    assert (abs(got - full * 100) <= 1).all()  # each class within one image of its share
    assert sub.equals(stratified_subset(table, 100, seed=1))
    assert not sub["sample_id"].equals(stratified_subset(table, 100, seed=2)["sample_id"])
