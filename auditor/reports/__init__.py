"""Reports render from the JSON result alone (read into the typed Report of auditor/result.py), one serializer per
format, so `audit report result.json` can re-render."""

from __future__ import annotations

import json
from pathlib import Path

from auditor.io import write_set_atomic
from auditor.reports.html import render_html
from auditor.reports.junit import render_junit
from auditor.reports.markdown import render_markdown
from auditor.reports.sarif import render_sarif
from auditor.result import Report, as_report

SCHEMA_PATH = Path(__file__).with_name("report.schema.json")


def render_json(result: Report | dict) -> str:
    return json.dumps(as_report(result).to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


SERIALIZERS = {
    "report.json": render_json,
    "report.md": render_markdown,
    "report.html": render_html,
}

#: Formats written only when asked for (`--junit F`, `--sarif F`), to a path of the user's choosing.
OPTIONAL_SERIALIZERS = {
    "junit": render_junit,
    "sarif": render_sarif,
}


def write_reports(result: Report | dict, out_dir: Path, extra: dict[str, Path | str | None] | None = None) -> list[Path]:
    """Render every format first, then write them as one set: an error in one, or a full disk, leaves the
    previous set whole.

    ``extra`` maps an optional format (``junit``, ``sarif``) to the file it goes to; ``None`` skips it.
    """
    result = as_report(result)
    targets = [(out_dir / name, render) for name, render in SERIALIZERS.items()]
    for fmt, path in (extra or {}).items():
        if path is not None:
            targets.append((Path(path), OPTIONAL_SERIALIZERS[fmt]))
    rendered = [(path, render(result)) for path, render in targets]
    return write_set_atomic(rendered)  # all new or all old: never a mixed report set


def load_result(path: Path) -> Report:
    """A saved report.json, checked against the schema, as a Report."""
    from auditor.errors import InputError

    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "no such result file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"not a JSON result ({err})", line=getattr(err, "lineno", None)) from None
    validate_result(result, path)
    return Report.from_dict(result)


def validate_result(result: dict, path: Path | str = "report.json") -> None:
    import jsonschema

    from auditor.errors import InputError

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(result))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "top level"
        raise InputError(path, f"does not follow the report schema at {where}: {error.message}")
