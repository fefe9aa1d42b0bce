"""The report templates ship inside the wheel (and are found from an editable install)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from cnnaudit.report.templates import template_dir

ROOT = Path(__file__).resolve().parents[1]


def test_templates_found_from_source_tree():
    assert (template_dir() / "report.html.j2").is_file()


def test_wheel_contains_templates(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    wheel = next(tmp_path.glob("cnnaudit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    sources = sorted(p.relative_to(ROOT / "reports/templates").as_posix()
                     for p in (ROOT / "reports/templates").rglob("*.j2"))
    assert sources and all(f"cnnaudit/_templates/{s}" in names for s in sources)
