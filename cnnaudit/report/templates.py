"""Where the report templates are: inside the wheel, or in the source tree for an editable install.

The templates live at the repository's `reports/templates/`; the wheel build copies them to
`cnnaudit/_templates/` (see pyproject's force-include). An editable install has no such copy, so the
source tree is the fallback.
"""

from __future__ import annotations

from pathlib import Path

PACKAGED = Path(__file__).resolve().parent.parent / "_templates"
SOURCE_TREE = Path(__file__).resolve().parents[2] / "reports" / "templates"


def template_dir() -> Path:
    for candidate in (PACKAGED, SOURCE_TREE):
        if (candidate / "report.html.j2").is_file():
            return candidate
    raise FileNotFoundError(f"cnnaudit's report templates are missing (looked in {PACKAGED} and {SOURCE_TREE}); "
                            "reinstall cnnaudit.")
