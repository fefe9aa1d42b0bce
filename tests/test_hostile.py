"""Inputs that must not do harm: links out of DATA, masks outside it, huge images, formula cells, Markdown."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

import cnnaudit
from cnnaudit.gate import judge, load_policy
from cnnaudit.gate.outputs import markdown
from tests.conftest import run_cli


def _small_copy(digits_dir, root, n_per_class=3):
    """A few digits per class, without metadata."""
    for class_dir in sorted(p for p in digits_dir.iterdir() if p.is_dir()):
        (root / class_dir.name).mkdir(parents=True)
        for f in sorted(class_dir.iterdir())[:n_per_class]:
            shutil.copy(f, root / class_dir.name / f.name)
    shutil.copy(digits_dir / "classes.txt", root / "classes.txt")
    return root


def test_symbolic_links_are_listed_as_skipped_not_followed(tmp_path, digits_dir, torchscript_path):
    root = _small_copy(digits_dir, tmp_path / "d")
    outside = tmp_path / "outside"
    _small_copy(digits_dir, outside)
    (root / "7" / "linked.png").symlink_to(next((outside / "7").iterdir()))  # a file link
    (root / "7" / "deep").symlink_to(outside / "8", target_is_directory=True)  # a folder link inside a class
    (root / "9x").symlink_to(tmp_path, target_is_directory=True)  # a class folder linked to a parent
    (root / "classes.txt").write_text("\n".join([str(i) for i in range(10)]) + "\n")
    s = cnnaudit.audit(torchscript_path, root, checks=[]).summary
    assert s["data"]["n_samples"] == 30  # the 3 real images per class only
    skipped = {r["path"]: r["reason"] for r in s["data"]["skipped"]}
    assert set(skipped) == {"7/linked.png", "7/deep", "9x"}
    assert all("symbolic link" in reason for reason in skipped.values())
    assert s["data"]["n_skipped"] == 3


@pytest.mark.parametrize("bad", ["../outside.png", "/etc/hostname"])
def test_mask_paths_are_confined_to_the_data_folder(tmp_path, digits_dir, torchscript_path, bad):
    root = _small_copy(digits_dir, tmp_path / "d")
    Image.new("L", (32, 32), 255).save(tmp_path / "outside.png")
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "ruler", "ruler_mask"])
        for i, p in enumerate(paths):
            w.writerow([p, int(i == 0), bad if i == 0 else ""])
    proc = run_cli("run", torchscript_path, root, "--checks", "shortcuts", "--artifact", "ruler",
                   "--out", tmp_path / "out")
    assert proc.returncode == 2 and "ruler_mask" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "report.html").exists()


def test_mask_files_inside_class_folders_are_annotations_not_samples(tmp_path, digits_dir, torchscript_path):
    root = _small_copy(digits_dir, tmp_path / "d")
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[26:30, 3:29] = 255
    Image.fromarray(mask).save(root / "3" / "ruler_mask.png")  # inside class 3's folder
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "ruler", "ruler_mask"])
        for p in paths:
            has = p.startswith("3/")
            w.writerow([p, int(has), "3/ruler_mask.png" if has else ""])
    result = cnnaudit.audit(torchscript_path, root, checks=["shortcuts"],
                            shortcuts={"artifacts": ("ruler",)})
    s = result.summary
    assert s["data"]["n_samples"] == 30 and s["data"]["n_files"] == 30
    assert "3/ruler_mask.png" not in set(result.samples["path"])
    assert s["shortcuts"]["artifacts"]["ruler"]["n_with"] == 3


def test_max_pixels_above_pils_own_limit_is_honoured(tmp_path, torchscript_path):
    """PIL refuses images over 2 x 89.5 MP before cnnaudit's own check; --max-pixels must still decide."""
    root = tmp_path / "d"
    for c in "01":
        (root / c).mkdir(parents=True)
        Image.new("L", (32, 32), 0).save(root / c / "small.png")
    side = 13_500  # 182 MP: over twice PIL's default limit, where PIL raises instead of warning
    Image.new("L", (side, side), 0).save(root / "0" / "huge.png")
    (root / "classes.txt").write_text("\n".join(str(i) for i in range(10)) + "\n")
    default = cnnaudit.audit(torchscript_path, root, checks=[], input_size=(32, 32)).summary
    assert [r["path"] for r in default["data"]["skipped"]] == ["0/huge.png"]
    assert "--max-pixels" in default["data"]["skipped"][0]["reason"]
    allowed = cnnaudit.audit(torchscript_path, root, checks=[], input_size=(32, 32), max_pixels=200_000_000).summary
    assert allowed["data"]["skipped"] == [] and allowed["data"]["n_samples"] == 3


def test_samples_csv_cells_cannot_become_spreadsheet_formulas(tmp_path, digits_dir, torchscript_path):
    root = _small_copy(digits_dir, tmp_path / "d", n_per_class=2)
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "site"])
        for i, p in enumerate(paths):
            w.writerow([p, ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "@SUM(A1)", "-2", "plain"][i % 5]])
    out = tmp_path / "out"
    assert run_cli("run", torchscript_path, root, "--checks", "none", "--out", out, "--quiet").returncode == 0
    with open(out / "samples.csv", newline="") as f:
        cells = [row["site"] for row in csv.DictReader(f)]
    assert {c for c in cells} == {"'=HYPERLINK(\"http://x\",\"y\")", "'+1+1", "'@SUM(A1)", "'-2", "plain"}
    assert not any(c.startswith(("=", "+", "-", "@")) for c in cells)


def test_gate_markdown_is_inert(tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text('[[rule]]\nname = "<img src=x onerror=alert(1)> [click](http://evil) @team | x"\n'
                      'kind = "min_clean_accuracy"\nthreshold = 0.99\n')
    summary = {"version": "0.2.0", "seed": 0, "clean": {"accuracy": 0.5},
               "model": {"path": "m`.pt <b>x</b>", "sha256": "ab" * 32}, "data": {"n_samples": 10}}
    md = markdown(judge(load_policy(str(policy)), summary), summary)
    for raw in ("<img", "<b>", "[click](", "@team", " | x"):
        assert raw not in md
    assert "&lt;img src=x onerror=alert\\(1\\)&gt;" in md and "&#64;team" in md
