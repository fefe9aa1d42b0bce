"""Corruptions: monotone in severity, in range, keyed by sample id; the check's aggregates match the rows."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

import cnnaudit
from cnnaudit.checks.corruption import CorruptionOptions, summarize_corruption
from cnnaudit.corruptions import CORRUPTIONS, LEVELS, corrupt
from cnnaudit.corruptions.rng import normal, sample_keys, uniform

from .conftest import read_summary, run_cli


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """Four real photos (skimage) at 64 x 64, RGB in [0, 1]."""
    imgs = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    return torch.cat([F.interpolate(torch.from_numpy(np.ascontiguousarray(i)).permute(2, 0, 1)[None].float() / 255,
                                    size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
                      for i in imgs])


def distance(a, b):
    return float(((a - b) ** 2).mean())


@pytest.mark.parametrize("name", [n for n in CORRUPTIONS if n not in LEVELS])
def test_similarity_to_clean_falls_with_severity(photos, name):
    ids = range(len(photos))
    d = [distance(photos, corrupt(photos, name, s, seed=0, sample_ids=ids)) for s in range(1, 6)]
    assert all(b >= a * 0.98 for a, b in zip(d, d[1:])), d  # non-decreasing (2% slack for resampled noise)
    assert d[4] > 1.5 * d[0] and d[0] > 1e-5, d


@pytest.mark.parametrize("name", list(LEVELS))
def test_a_one_level_corruption_is_the_same_at_every_severity(photos, name):
    ids = range(len(photos))
    once = corrupt(photos, name, 1, seed=0, sample_ids=ids)
    assert not torch.equal(once, photos) and corrupt(photos, name, 1, seed=0, sample_ids=ids).flip(
        -1 if name == "hflip" else -2).equal(photos)  # its own inverse: a mirror
    assert all(torch.equal(once, corrupt(photos, name, s, seed=0, sample_ids=ids)) for s in range(2, 6))


def test_low_light_darkens_and_gets_noisier(photos):
    ids = range(len(photos))
    means, noise = [], []
    for s in range(1, 6):
        a = corrupt(photos, "low_light", s, seed=0, sample_ids=ids)
        b = corrupt(photos, "low_light", s, seed=1, sample_ids=ids)  # same light, other noise draw
        means.append(float(a.mean()))
        noise.append(float((a - b).std()) / float(a.mean()))
    assert all(b < a for a, b in zip(means, means[1:])), means
    assert all(b > a for a, b in zip(noise, noise[1:])), noise


@pytest.mark.parametrize("name", list(CORRUPTIONS))
@pytest.mark.parametrize("shape", [(3, 1, 37, 23), (2, 3, 64, 48)])
def test_shape_and_range_preserved(name, shape):
    x = torch.rand(shape)
    x[0] = 0.0
    x[-1, :, :4] = 1.0
    for s in (1, 5):
        y = corrupt(x, name, s, seed=0, sample_ids=range(len(x)))
        assert y.shape == x.shape and y.dtype == x.dtype
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0 and bool(torch.isfinite(y).all())


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_same_image_same_corruption_whatever_the_batch(photos, name):
    x = torch.cat([photos, photos.flip(0)])  # 8 images, ids 10..17
    ids = list(range(10, 18))
    whole = corrupt(x, name, 3, seed=5, sample_ids=ids)
    part = corrupt(x[5:7], name, 3, seed=5, sample_ids=ids[5:7])
    alone = corrupt(x[6:7], name, 3, seed=5, sample_ids=ids[6:7])
    assert torch.allclose(whole[5:7], part, atol=1e-5) and torch.allclose(whole[6:7], alone, atol=1e-5)
    # and the key matters for random corruptions: same pixels, other id or seed, other rain
    other = corrupt(x[6:7], name, 3, seed=6, sample_ids=ids[6:7])
    if name in ("rain", "snow", "low_light", "fog", "gaussian_noise", "motion_blur"):
        assert not torch.allclose(alone, other, atol=1e-3)


def test_counter_rng_is_uniform_and_normal():
    keys = sample_keys(0, range(64), "t", "cpu")
    u = uniform(keys, (1000,), stream=3)
    assert 0 < float(u.min()) and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.005
    assert abs(float(u.std()) - (1 / 12) ** 0.5) < 0.005
    z = normal(keys, (1000,), stream=3)
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02
    assert not torch.equal(uniform(keys, (1000,), stream=4), u)
    corr = np.corrcoef(u[:, :-1].flatten().numpy(), u[:, 1:].flatten().numpy())[0, 1]
    assert abs(corr) < 0.01  # neighbouring counters are uncorrelated


def test_per_subgroup_breakdown_matches_hand_computation():
    # 6 samples, site a (ids 0-2) and b (3-5); one corruption at two severities
    rows = pd.DataFrame({
        "sample_id": [0, 1, 2, 3, 4, 5] * 2, "label": [0, 1, 0, 1, 0, 1] * 2,
        "label_name": ["cat", "dog", "cat", "dog", "cat", "dog"] * 2, "site": ["a", "a", "a", "b", "b", "b"] * 2,
        "corruption": "rain", "severity": [1] * 6 + [3] * 6,
        "correct": [1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 1, 0], "consistent": [1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0]})
    rows[["correct", "consistent"]] = rows[["correct", "consistent"]].astype(bool)
    clean = pd.DataFrame({"sample_id": range(6), "correct": [True] * 5 + [False]})
    s = summarize_corruption(rows, clean, CorruptionOptions(("rain",), (1, 3)), ["cat", "dog"], ["site"])
    group = {(g["value"], g["severity"]): (g["accuracy"], g["n"]) for g in s["per_group"]}
    assert group == {("a", 1): (pytest.approx(2 / 3), 3), ("b", 1): (1.0, 3),
                     ("a", 3): (pytest.approx(1 / 3), 3), ("b", 3): (pytest.approx(1 / 3), 3)}
    res = {r["severity"]: r for r in s["results"]}
    assert res[1]["accuracy"] == pytest.approx(5 / 6) and res[3]["accuracy"] == pytest.approx(2 / 6)
    assert res[3]["consistency"] == pytest.approx(3 / 6)
    # paired against clean on the same samples: severity 3 broke 1, 2 and 3 and fixed nothing (5 was wrong
    # clean and stays wrong): exact McNemar p = 2 * 0.5**3; severity 1 broke 2 and fixed 5
    assert (res[3]["n_broken"], res[3]["n_fixed"]) == (3, 0) and (res[1]["n_broken"], res[1]["n_fixed"]) == (1, 1)
    assert res[3]["p_value"] == pytest.approx(0.25)
    assert s["mean"]["rain"] == pytest.approx((5 / 6 + 2 / 6) / 2, abs=1e-6)
    assert s["relative_drop"]["rain"] == pytest.approx((5 / 6 - 7 / 12) / (5 / 6), abs=1e-5)
    cls = {(c["class"], c["severity"]): c["accuracy"] for c in s["per_class"]}
    assert cls[("cat", 3)] == pytest.approx(2 / 3) and cls[("dog", 3)] == 0.0


def test_check_rows_and_summary(eager_model, digits_dir):
    res = cnnaudit.audit(eager_model, digits_dir, checks=["corruption"], limit=60,
                         corruption={"corruptions": ("rain", "low_light", "contrast"), "severities": (1, 5)})
    c = res.summary["corruption"]
    rows = res.samples.query("check == 'corruption'")
    clean = res.samples.query("check == 'clean'").set_index("sample_id")
    assert len(rows) == 60 * 3 * 2 and set(rows["condition"]) == {f"{n}_{s}" for n in ("rain", "low_light", "contrast")
                                                                  for s in (1, 5)}
    for r in c["results"]:
        sel = rows[(rows["corruption"] == r["corruption"]) & (rows["severity"] == r["severity"])]
        assert r["accuracy"] == pytest.approx(sel["correct"].mean(), abs=1e-6) and r["n"] == 60
        same = (sel.set_index("sample_id")["prediction"] == clean.loc[sel["sample_id"], "prediction"]).mean()
        assert r["consistency"] == pytest.approx(same, abs=1e-6)
        assert r["accuracy_ci"][0] <= r["accuracy"] <= r["accuracy_ci"][1]
    keys = list(zip(rows["corruption"], rows["severity"], rows["sample_id"]))
    assert keys == sorted(keys) and len(set(keys)) == len(keys)  # one row per image and condition, in order
    # samples.csv is written a few rows at a time: the same text whatever the chunk, the same table as all rows
    whole, chunked = io.StringIO(), io.StringIO()
    res._write_samples(whole)
    res._write_samples(chunked, chunk=7)
    assert chunked.getvalue() == whole.getvalue()
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(chunked.getvalue())),
                                  pd.read_csv(io.StringIO(res.samples.to_csv(index=False))))
    acc = {(r["corruption"], r["severity"]): r["accuracy"] for r in c["results"]}
    assert acc[("contrast", 5)] < acc[("contrast", 1)] and acc[("low_light", 5)] < acc[("low_light", 1)]
    assert {g["attribute"] for g in c["per_group"]} >= {"scanner"}
    assert res.summary["clean"]["accuracy"] - c["mean"]["contrast"] == pytest.approx(
        c["relative_drop"]["contrast"] * res.summary["clean"]["accuracy"], abs=1e-5)
    html = res.html()
    assert "What the corruptions look like" in html and "low_light" in html


def test_cli_corruption_options(tmp_path, torchscript_path, digits_dir):
    out = tmp_path / "o"
    r = run_cli("run", torchscript_path, digits_dir, "--out", out, "--checks", "corruption", "--limit", "30",
                "--corruptions", "snow,jpeg", "--severities", "2,4", "--quiet")
    assert r.returncode == 0, r.stderr
    c = read_summary(out)["corruption"]
    assert c["corruptions"] == ["snow", "jpeg"] and c["severities"] == [2, 4] and len(c["results"]) == 4
    for bad in (["--corruptions", "hail"], ["--severities", "0,9"], ["--severities", "x"]):
        r = run_cli("run", torchscript_path, digits_dir, "--out", tmp_path / "b", "--checks", "corruption", *bad)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and ("corruptions" in r.stderr or "severities" in r.stderr)
