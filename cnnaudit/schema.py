"""The JSON Schema of summary.json (cnnaudit/summary.schema.json, shipped in the package), for CI jobs
that read summaries: `python -m cnnaudit.schema` prints it; `validate(summary)` checks one (it needs the
`jsonschema` package, which cnnaudit does not require at run time)."""

from __future__ import annotations

import json
from importlib.resources import files


def summary_schema() -> dict:
    return json.loads(files("cnnaudit").joinpath("summary.schema.json").read_text(encoding="utf-8"))


def validate(summary: dict) -> None:
    """Raise jsonschema.ValidationError when `summary` does not match the published schema."""
    import jsonschema
    jsonschema.validate(summary, summary_schema(), cls=jsonschema.Draft202012Validator)


if __name__ == "__main__":
    print(json.dumps(summary_schema(), indent=2))
