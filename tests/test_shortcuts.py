"""Shortcuts: a planted ruler is flagged by the causal tests and its control is not, for eager and
TorchScript models; removal stays in range and touches only the annotated region."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import cnnaudit
from cnnaudit.demo import RULER_BOX, draw_ruler, train_model, write_image_folder
from cnnaudit.shortcuts.fills import FILLS, fill
from cnnaudit.shortcuts.regions import box_mask

from .conftest import CLASSES, read_summary, run_cli

BOX = " ".join(map(str, RULER_BOX))


def _clean_digits(digits, idx):
    """Digits without the demo's planted ruler and scanner: the ruler is re-planted per test."""
    from sklearn.datasets import load_digits
    import torch.nn.functional as F
    d = load_digits()
    x = torch.tensor(d.images[idx], dtype=torch.float32)[:, None] / 16.0
    return F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1), d.target[idx]


@pytest.fixture(scope="module")
def pair(digits):
    """(planted, control): in the planted model's training data a ruler always means class 3 (rulers on
    every 3 and on 30% of other digits, relabelled 3, as when a marker is drawn next to malignant
    lesions only); in the control's, rulers sit on 30% of all digits, labels untouched."""
    x, y = _clean_digits(digits, np.arange(0, 1200))
    rng = np.random.default_rng(0)
    on = rng.random(len(y)) < 0.3
    planted_x, planted_y = x.clone(), y.copy()
    ruled = on | (y == 3)
    planted_x[torch.from_numpy(ruled)] = draw_ruler(planted_x[torch.from_numpy(ruled)])
    planted_y[ruled] = 3
    control_x = x.clone()
    control_x[torch.from_numpy(on)] = draw_ruler(control_x[torch.from_numpy(on)])
    return train_model(planted_x, planted_y, epochs=6), train_model(control_x, y, epochs=6)


@pytest.fixture(scope="module")
def ruler_dir(tmp_path_factory, digits):
    """250 held-out digits, true labels, a ruler on a random 40% (independent of the class)."""
    x, y = _clean_digits(digits, np.arange(1300, 1550))
    on = np.random.default_rng(1).random(len(y)) < 0.4
    x[torch.from_numpy(on)] = draw_ruler(x[torch.from_numpy(on)])
    meta = pd.DataFrame({"ruler": on.astype(int), "ruler_box": [BOX if r else "" for r in on]})
    root = tmp_path_factory.mktemp("ruler") / "data"
    write_image_folder(root, x, y, meta, CLASSES)
    return root


def shortcut_summary(model, data):
    return cnnaudit.audit(model, data, checks=["shortcuts"], shortcuts={"artifacts": ("ruler",)})


def test_planted_ruler_is_a_shortcut_and_its_control_is_not(pair, ruler_dir):
    planted, control = (shortcut_summary(m, ruler_dir).summary["shortcuts"] for m in pair)
    p, c = planted["artifacts"]["ruler"], control["artifacts"]["ruler"]
    assert p["verdict"] == "shortcut" and c["verdict"] != "shortcut", (p["verdict"], c["verdict"])
    assert p["associated_class"] == "3"
    for how in FILLS:  # every fill flips the planted model, none the control
        assert p["by_fill"][how]["flip_rate"] >= 0.3 > c["by_fill"][how]["flip_rate"] + 0.2, (how, p, c)
    assert p["add_flip_rate"] >= 0.3 and c["add_flip_rate"] < 0.1
    # removal restores accuracy on the planted model: its ruler images were being called "3"
    assert p["accuracy_change"] > 0.2
    # statistical view: within true non-3 classes, "3" is predicted far more often with a ruler
    rates = [r for r in p["conditional_rates"] if r["class"] != "3"]
    assert np.mean([r["rate_with"] for r in rates]) > np.mean([r["rate_without"] for r in rates]) + 0.3
    assert p["saliency_method"] == "grad-cam" and p["saliency_mass_ratio"] is not None
    assert planted["sanity"]["passed"] is not None


def test_torchscript_model_gets_the_same_verdict(pair, ruler_dir, tmp_path):
    path = tmp_path / "planted.pt"
    torch.jit.save(torch.jit.script(pair[0]), str(path))
    r = run_cli("run", path, ruler_dir, "--out", tmp_path / "o", "--checks", "shortcuts", "--artifact", "ruler",
                "--quiet")
    assert r.returncode == 0, r.stderr
    s = read_summary(tmp_path / "o")["shortcuts"]
    assert s["artifacts"]["ruler"]["verdict"] == "shortcut"
    assert s["artifacts"]["ruler"]["saliency_method"] == "occlusion"
    assert s["sanity"]["passed"] is None and "not run" in s["sanity"]["detail"]


def test_removal_stays_in_range_and_only_touches_the_region():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 32, 32, generator=g)
    mask = box_mask((3, 26, 29, 30), (32, 32), (32, 32))[None].expand(5, -1, -1, -1)
    assert int(mask[0].sum()) == 26 * 4
    for how in FILLS:
        out = fill(x, mask, how)
        assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
        assert torch.equal(out[~mask.expand_as(x)], x[~mask.expand_as(x)]), how
        assert not torch.equal(out[mask.expand_as(x)], x[mask.expand_as(x)]), how
    # a box in stored pixels lands on the same content after resizing to the model input
    scaled = box_mask((6, 52, 58, 60), (64, 64), (32, 32))
    assert torch.equal(scaled, box_mask((3, 26, 29, 30), (32, 32), (32, 32)))


def test_artifact_errors_exit_2(tmp_path, torchscript_path, digits_dir):
    for flag, needle in ((["--artifact", "watermark"], "'watermark'"), (["--artifact", "scanner"], "scanner_box")):
        r = run_cli("run", torchscript_path, digits_dir, "--out", tmp_path / "o", "--checks", "shortcuts", *flag)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr


def test_saliency_sanity_leaves_out_and_counts_constant_maps(digits_dir):
    # Every Grad-CAM map of this model is exactly 0: its class scores fall as any channel rises, so ReLU of
    # the weighted activations is 0 everywhere. A constant map has no ranking; its pairs are counted, not
    # correlated (scipy would warn and return NaN).
    import warnings

    from scipy.stats import ConstantInputWarning
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 10)).eval()
    with torch.no_grad():
        model[-1].weight.fill_(-1.0)
        model[-1].bias.copy_(torch.arange(10.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = cnnaudit.audit(model, digits_dir, channels=1, input_size=(32, 32), checks=["shortcuts"],
                                limit=40, quiet=True)
    sanity = result.summary["shortcuts"]["sanity"]
    assert sanity["passed"] is None and sanity["rank_correlation"] is None, sanity
    assert "(32 of 32 sample pairs left out: a constant map has no ranking)" in sanity["detail"], sanity
    assert not [w for w in caught if issubclass(w.category, ConstantInputWarning)]


def _with_boxes(src, dst, boxes: dict[int, str]):
    """A copy of an image folder whose ruler annotations are replaced: {row: box} marked, the rest not."""
    import shutil
    shutil.copytree(src, dst)
    meta = pd.read_csv(dst / "metadata.csv")
    meta["ruler"] = [int(i in boxes) for i in range(len(meta))]
    meta["ruler_box"] = [boxes.get(i, "") for i in range(len(meta))]
    meta.to_csv(dst / "metadata.csv", index=False)
    return dst


def test_a_box_outside_the_image_is_excluded_and_counted(pair, ruler_dir, tmp_path):
    data = _with_boxes(ruler_dir, tmp_path / "d", {i: "300 300 310 310" for i in range(0, 250, 10)})
    a = shortcut_summary(pair[0], data).summary["shortcuts"]["artifacts"]["ruler"]
    assert a["n_excluded"] == 25 and a["n_with"] == 0
    assert all("empty" in e["reason"] for e in a["excluded"])
    assert a["verdict"] == "inconclusive"  # nothing could be tested: never "no evidence"


def test_too_few_annotated_images_are_inconclusive(pair, ruler_dir, tmp_path):
    meta = pd.read_csv(ruler_dir / "metadata.csv")
    ruled = [i for i in range(len(meta)) if meta["ruler"][i] == 1][:3]
    data = _with_boxes(ruler_dir, tmp_path / "d", {i: BOX for i in ruled})
    a = shortcut_summary(pair[0], data).summary["shortcuts"]["artifacts"]["ruler"]
    assert a["n_with"] == 3 and a["min_annotated"] == 10
    assert a["by_fill"]["ring_mean"]["flip_rate"] >= 2 / 3  # the planted model does flip ...
    assert a["verdict"] == "inconclusive"  # ... but three images are not evidence


def test_a_box_over_the_object_is_not_a_shortcut(pair, ruler_dir, tmp_path):
    """Removing part of the digit flips predictions too; removing the same-size region elsewhere on the
    digit flips as many, so the control keeps the verdict from calling the object a shortcut."""
    data = _with_boxes(ruler_dir, tmp_path / "d", {i: "8 4 24 14" for i in range(0, 250, 2)})
    a = shortcut_summary(pair[1], data).summary["shortcuts"]["artifacts"]["ruler"]
    assert a["by_fill"]["ring_mean"]["flip_rate"] >= 0.1  # removal alone would have said "shortcut"
    assert a["by_fill"]["ring_mean"]["n_control"] > 0
    assert a["verdict"] != "shortcut", a["by_fill"]


def test_a_ruler_thinner_than_one_input_pixel_is_still_found(tmp_path, digits):
    """256 px images with a 5 px ruler, audited at 32 px: no input pixel's centre lies inside the ruler's
    box, but the ruler is in the input (blurred into two rows); the model learned it."""
    import torch.nn.functional as F
    from PIL import Image

    def compose(idx, ruled):
        x32, y = _clean_digits(digits, idx)
        big = F.interpolate(x32, size=(256, 256), mode="bilinear", align_corners=False).clamp(0, 1)
        big[torch.from_numpy(ruled), :, 213:218, 16:240] = 0.95
        return big, y

    rng = np.random.default_rng(0)
    train_idx = np.arange(0, 900)
    on = rng.random(len(train_idx)) < 0.3
    big, y = compose(train_idx, on | (load_target(train_idx) == 3))
    y = np.where(on, 3, y)
    small = torch.cat([F.interpolate(b, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
                       for b in big.split(100)]).clamp(0, 1)
    planted = train_model(small, y, epochs=6)
    test_idx = np.arange(1300, 1450)
    on_test = np.random.default_rng(1).random(len(test_idx)) < 0.4
    big_test, y_test = compose(test_idx, on_test)
    root = tmp_path / "thin"
    paths = []
    for i, (img, label) in enumerate(zip(big_test, y_test)):
        (root / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray((img[0].numpy() * 255 + 0.5).astype(np.uint8)).save(root / CLASSES[label] / f"{i:04d}.png")
        paths.append(f"{CLASSES[label]}/{i:04d}.png")
    pd.DataFrame({"path": paths, "ruler": on_test.astype(int),
                  "ruler_box": ["16 213 240 218" if r else "" for r in on_test]}).to_csv(root / "metadata.csv",
                                                                                      index=False)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    centres = (torch.arange(32) + 0.5) * 8
    assert not bool(((centres >= 213) & (centres < 218)).any())  # the old centre rule found no pixel
    assert int(box_mask((16, 213, 240, 218), (256, 256), (32, 32)).any(dim=2).sum()) == 2  # coverage: 2 rows
    a = cnnaudit.audit(planted, root, input_size=(32, 32), checks=["shortcuts"],
                       shortcuts={"artifacts": ("ruler",)}).summary["shortcuts"]["artifacts"]["ruler"]
    assert a["n_excluded"] == 0 and a["flip_rate"] >= 0.3, a["by_fill"]
    assert a["verdict"] == "shortcut", a["by_fill"]


def load_target(idx):
    from sklearn.datasets import load_digits
    return load_digits().target[idx]
