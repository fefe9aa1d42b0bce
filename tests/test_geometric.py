"""Geometric robustness (issue 21): translate, rotate, zoom and the opt-in flips in the corruption check,
and the shift check's consistency (Zhang 2019) and worst-of-k (Azulay & Weiss 2019), on real digits."""

from __future__ import annotations

import pytest
import torch

import cnnaudit
from cnnaudit.corruptions import corrupt, sample_keys
from cnnaudit.corruptions.geometry import TRANSLATE, border_fill, rotate_by, shift, translate, zoom_by
from cnnaudit.checks.corruption import CorruptionOptions
from tests.conftest import run_cli
from tests.zoo import GlobalMax, shift_augmented


@pytest.fixture(scope="module")
def images(digits):
    x, _, _ = digits
    return x[1000:1016].clone()  # 16 real digits, 1 x 32 x 32, black border


def test_a_whole_pixel_shift_moves_the_content_exactly(images):
    x = torch.rand(4, 3, 11, 17)  # odd, non-square, colour
    dx, dy = torch.tensor([2, -3, 0, 5]), torch.tensor([1, 4, -2, 0])
    fill = border_fill(x)
    out = shift(x, dx, dy)
    for i in range(4):
        a, b = int(dx[i]), int(dy[i])
        src = x[i][:, max(0, -b):11 - max(0, b), max(0, -a):17 - max(0, a)]
        dst = out[i][:, max(0, b):11 - max(0, -b), max(0, a):17 - max(0, -a)]
        assert torch.equal(src, dst)  # bit for bit: no resampling
        uncovered = torch.ones(11, 17, dtype=torch.bool)
        uncovered[max(0, b):11 - max(0, -b), max(0, a):17 - max(0, -a)] = False
        assert torch.equal(out[i][:, uncovered], fill[i, :, :1, 0].expand(3, int(uncovered.sum())))
    # the translate corruption is such a shift, of the severity's size, the same in any batch
    keys = sample_keys(0, range(16), "translate", "cpu")
    for severity in (1, 3, 5):
        moved = translate(images, severity, keys)
        size = round(TRANSLATE[severity - 1] * 32)
        for i in range(16):
            hits = [(a, b) for a in range(-size, size + 1) for b in range(-size, size + 1)
                    if torch.equal(moved[i], shift(images[i:i + 1], torch.tensor([a]), torch.tensor([b]))[0])]
            assert hits and max(abs(hits[0][0]), abs(hits[0][1])) <= size, (severity, i)
    alone = corrupt(images[5:6], "translate", 4, seed=0, sample_ids=[5])
    assert torch.equal(alone[0], corrupt(images, "translate", 4, seed=0, sample_ids=range(16))[5])


def test_rotation_and_zoom_identities_and_the_border(images):
    assert torch.equal(rotate_by(images, torch.zeros(16)), images)
    assert torch.equal(zoom_by(images, torch.ones(16)), images)
    square = torch.rand(3, 2, 9, 9)
    turned = rotate_by(square, torch.full((3,), 90.0))
    assert torch.allclose(turned, torch.rot90(square, 1, dims=(-2, -1)), atol=1e-5)  # counter-clockwise
    # what a rotation or zoom-out uncovers looks like the image's own background: black for most digits,
    # grey for the washed-out scanner's
    fill = border_fill(images)[:, 0, 0, 0]
    assert torch.equal(fill, images[:, 0, 0, 0]) and fill.min() == 0 and fill.max() > 0.3
    out = zoom_by(images, torch.full((16,), 1 / 1.6))
    assert torch.allclose(out[..., :3, :], fill[:, None, None, None].expand(16, 1, 3, 32), atol=1e-6)
    grey = torch.full((1, 1, 8, 8), 0.4)
    grey[..., 3:5, 3:5] = 1.0
    assert torch.allclose(rotate_by(grey, torch.tensor([30.0]))[..., 0, 0], torch.tensor(0.4))


def test_the_corruption_options_for_geometry():
    opts = CorruptionOptions(corruptions=("geometric",))
    from cnnaudit.options import validate
    assert validate("corruption", CorruptionOptions, {"corruptions": "geometric"}).corruptions == (
        "translate", "rotate", "zoom")
    every = validate("corruption", CorruptionOptions, {"corruptions": "all"}).corruptions
    assert "translate" in every and "hflip" not in every and "vflip" not in every  # flips only when named
    assert validate("corruption", CorruptionOptions, {"corruptions": "geometric,hflip,rain"}).corruptions == (
        "translate", "rotate", "zoom", "hflip", "rain")
    assert opts  # the dataclass itself takes the word; validate expands it


def test_accuracy_falls_with_severity_and_less_for_a_model_trained_with_shifts(eager_model, digits, digits_dir):
    x, y, _ = digits
    augmented = shift_augmented(x[:1000], y[:1000])
    settings = {"limit": 300, "checks": ["corruption", "shift"],
                "corruption": {"corruptions": ("geometric", "hflip"), "severities": (1, 2, 3, 4, 5)}}
    plain = cnnaudit.audit(eager_model, digits_dir, **settings).summary
    robust = cnnaudit.audit(augmented, digits_dir, **settings).summary

    def acc(s, name):
        return [r["accuracy"] for r in s["corruption"]["results"] if r["corruption"] == name]

    for name in ("translate", "rotate", "zoom"):
        a = acc(plain, name)
        assert len(a) == 5 and a[0] > a[2] > a[4] and a[4] < plain["clean"]["accuracy"] - 0.25, (name, a)
    assert len(acc(plain, "hflip")) == 1  # one level, whatever the severities
    gain = plain["corruption"]["relative_drop"]["translate"] - robust["corruption"]["relative_drop"]["translate"]
    assert gain > 0.1, (plain["corruption"]["relative_drop"], robust["corruption"]["relative_drop"])
    # shift consistency: below 1 for the plain CNN, and higher once trained with shifts
    assert plain["shift"]["consistency"] < 0.9 and plain["shift"]["changed"] > 0.3
    assert robust["shift"]["consistency"] > plain["shift"]["consistency"] + 0.1
    assert robust["shift"]["changed_ci"][1] < plain["shift"]["changed_ci"][0]
    finding = next(f for f in plain["findings"] if f["kind"] == "shift_sensitivity")
    assert finding["severity"] == "fail" and finding["sample_ids"]
    lo, hi = plain["shift"]["consistency_ci"]
    assert lo < plain["shift"]["consistency"] < hi
    assert {r["class"] for r in plain["shift"]["per_class"]} == {str(i) for i in range(10)}
    assert {r["attribute"] for r in plain["shift"]["per_group"]} >= {"scanner"}


def test_consistency_is_one_for_a_model_that_ignores_position(digits_dir):
    s = cnnaudit.audit(GlobalMax(), digits_dir, limit=200, checks=["shift"]).summary
    assert len({r["class"] for r in s["shift"]["per_class"]})  # real, varied data
    assert s["shift"]["consistency"] == 1.0 and s["shift"]["changed"] == 0.0
    assert s["shift"]["worst_accuracy"] == s["clean"]["accuracy"]
    assert not [f for f in s["findings"] if f["kind"] == "shift_sensitivity"]


def test_the_command_line_and_report(torchscript_path, digits_dir, tmp_path):
    r = run_cli("run", torchscript_path, digits_dir, "--out", tmp_path / "o", "--checks", "corruption,shift",
                "--corruptions", "geometric,vflip", "--severities", "2,5", "--shift-pixels", "1", "--limit", "100",
                "--quiet")
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "o" / "report.html").read_text()
    for name in ("translate", "rotate", "zoom", "vflip"):
        assert f'alt="{name}"' in html  # each family in the "what the corruptions look like" grid
    assert "(one level)" in html and "Worst-of-8" in html
    r = run_cli("run", torchscript_path, digits_dir, "--out", tmp_path / "x", "--corruptions", "geometry")
    assert r.returncode == 2 and "geometric" in r.stderr and r.stderr.count("\n") == 1
