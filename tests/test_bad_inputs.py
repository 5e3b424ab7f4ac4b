"""The bad-input corpus (fixtures/bad_inputs/): every bad input is an InputError naming the file and the line,
leaves the input untouched and leaves no temporary copies; good inputs load with the right rows and layout.

Small cases are committed under fixtures/bad_inputs/corpus/; the large and HF-folder cases are generated once per
session into a temporary folder. CLI-level tests run only where `auditor.cli` exists.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import sys
import tempfile
import zlib
from pathlib import Path

import polars as pl
import pytest

from auditor.dataset import digest_text, load_dataset
from auditor.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "bad_inputs"
CORPUS = FIXTURES / "corpus"


def _load_builder():
    name = "bad_inputs_build"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FIXTURES / "build.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[name]


builder = _load_builder()
CASES = builder.CASES
BAD = [name for name, case in CASES.items() if case.kind == "bad"]
GOOD = [name for name, case in CASES.items() if case.kind == "good"]
TEACHER = "openai:gpt-4.1-nano"


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> Path:
    """The on-demand cases (a 50 MB line, saved HF folders): built once per session, never committed."""
    out = tmp_path_factory.mktemp("bad_inputs_generated")
    builder.build(out, names=builder.on_demand_names())
    return out


def case_path(case, request) -> Path:
    # the generated folder is only built when a selected test needs one of its cases
    base = request.getfixturevalue("generated") if case.on_demand else CORPUS
    return base / case.file


def fingerprint(path: Path):
    """sha256 of a file, or of every file under a folder; None for a missing path."""
    if not path.exists():
        return None
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [(str(f.relative_to(path)) if path.is_dir() else "", hashlib.sha256(f.read_bytes()).hexdigest()) for f in files]


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """Routes tempfile into a private folder, so leftover decompressed copies can be seen."""
    folder = tmp_path / "tempdir"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


# ---------------------------------------------------------------------------------------------- library


@pytest.mark.parametrize("name", BAD)
def test_bad_input_raises_input_error(name, request, private_tmp):
    case = CASES[name]
    path = case_path(case, request)
    assert path.exists() == case.exists, f"corpus file for {name} is missing: run fixtures/bad_inputs/build.py"
    before = fingerprint(path)

    with pytest.raises(InputError) as info:
        load_dataset(path, **case.options)

    err = info.value
    assert err.line == case.line, str(err)
    assert case.contains in err.problem, str(err)
    assert err.path == str(path)
    assert str(path) in str(err)
    assert str(err).startswith(f"{path}:{case.line}: " if case.line is not None else f"{path}: "), str(err)
    if case.unit:
        assert err.unit == case.unit, str(err)
    assert fingerprint(path) == before, "the input was modified"
    assert not list(private_tmp.iterdir()), "a temporary (decompressed) copy was left behind"


def test_truncated_gzip_line_is_complete_lines_plus_one():
    case = CASES["truncated_gzip"]
    data = (CORPUS / case.file).read_bytes()
    with pytest.raises((EOFError, zlib.error)):
        gzip.decompress(data)  # really truncated
    complete = zlib.decompressobj(wbits=31).decompress(data).count(b"\n")
    assert 0 < complete < builder.TRUNCATED_GZ_PAYLOAD.count(b"\n")
    assert case.line == complete + 1
    with pytest.raises(InputError, match=rf"after {complete} complete lines"):
        load_dataset(CORPUS / case.file)


def test_huge_line_is_over_the_limit(request):
    case = CASES["huge_line"]
    path = case_path(case, request)
    lines = path.read_bytes().split(b"\n")
    assert len(lines[1]) >= 50_000_000 > 16 * 2**20
    # a higher limit lets it through: the error is the row limit, nothing else
    assert load_dataset(path, max_row_mib=64).rows == 4


@pytest.mark.parametrize("name", GOOD)
def test_good_input_loads(name, request, private_tmp):
    case = CASES[name]
    path = case_path(case, request)
    before = fingerprint(path)

    dataset = load_dataset(path, **case.options)

    assert dataset.rows == case.rows
    assert dataset.layout.name == case.layout
    assert dataset.format == case.format
    frame = dataset.frame.collect()
    assert frame.columns[:3] == ["row", "prompt", "completion"]
    assert frame.height == case.rows
    assert frame["row"].to_list() == case.row_numbers  # source line / item / row numbers, blank lines skipped
    by_row = {r["row"]: (r["prompt"], r["completion"]) for r in frame.iter_rows(named=True)}
    for row, prompt, completion in case.samples:
        assert by_row[row] == (prompt, completion), f"row {row}"
    assert dataset.duplicates == {"rows": 0, "groups": []}
    assert fingerprint(path) == before
    if dataset.format.endswith(".gz"):
        del dataset, frame  # the decompressed copy lives as long as the dataset
    assert not list(private_tmp.iterdir())


def test_duplicates_are_reported_not_fatal():
    case = CASES["duplicates"]
    path = CORPUS / case.file
    before = fingerprint(path)

    dataset = load_dataset(path)

    assert dataset.rows == case.rows
    assert dataset.layout.name == case.layout
    assert dataset.frame.collect()["row"].to_list() == list(range(1, case.rows + 1))  # duplicates are kept
    assert dataset.duplicates["rows"] == case.duplicate_rows
    assert [g["rows"] for g in dataset.duplicates["groups"]] == case.duplicate_groups
    frame = dataset.frame.collect()
    for group in dataset.duplicates["groups"]:
        first = frame.filter(pl.col("row") == group["rows"][0]).row(0, named=True)
        assert group["digest"] == digest_text(first["prompt"], first["completion"])
    assert fingerprint(path) == before


# ----------------------------------------------------------------------------------------- the corpus


def test_cases_are_well_formed():
    for name, case in CASES.items():
        assert case.name == name
        assert case.kind in ("bad", "good", "duplicates")
        if case.kind == "bad":
            assert case.contains, name
            assert case.line is None or case.line >= 1, name
        else:
            assert case.rows and case.layout and case.format, name
    for required in (
        "malformed_json", "invalid_utf8", "bom", "crlf", "empty", "whitespace_only", "huge_line", "unknown_schema",
        "missing_field", "null_field", "number_completion", "object_completion_line150", "number_completion_line500",
        "chat_no_assistant", "chat_nonstring_content", "json_array_bad_item", "json_array_malformed", "not_hf_folder",
        "missing_path", "truncated_gzip", "csv_missing_completion", "parquet_int_completion",
        "override_missing_completion_field", "duplicates", "good_jsonl_blank_lines", "good_json_array", "good_parquet",
        "good_csv", "good_jsonl_gz", "good_hf_folder", "good_messages", "good_instruction_input",
    ):
        assert required in CASES, required


def _same_content(committed: Path, fresh: Path) -> bool:
    if committed.is_dir() or fresh.is_dir():
        return committed.is_dir() and fresh.is_dir() and fingerprint(committed) == fingerprint(fresh)
    if committed.suffix == ".parquet":  # writer metadata may differ across polars versions
        return pl.read_parquet(committed).equals(pl.read_parquet(fresh))
    if committed.suffix == ".gz":  # compressed bytes may differ across zlib builds: compare what they hold
        try:
            return gzip.decompress(committed.read_bytes()) == gzip.decompress(fresh.read_bytes())
        except (EOFError, OSError, zlib.error):
            unpack = lambda p: zlib.decompressobj(wbits=31).decompress(p.read_bytes())  # noqa: E731
            return committed.read_bytes() == fresh.read_bytes() or unpack(committed) == unpack(fresh)
    return committed.read_bytes() == fresh.read_bytes()


def test_committed_corpus_matches_the_builder(tmp_path):
    written = builder.build(tmp_path)
    assert set(written) == set(builder.committed_names())
    for name, case in written.items():
        committed, fresh = CORPUS / case.file, tmp_path / case.file
        assert committed.exists() == fresh.exists() == case.exists, name
        if case.exists:
            assert _same_content(committed, fresh), f"{case.file} is stale: rerun fixtures/bad_inputs/build.py"
    # nothing stale, nothing on-demand, nothing big in the committed corpus
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted(p.name for p in tmp_path.iterdir())
    assert sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file()) < 1_000_000


# -------------------------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("name", BAD)
def test_cli_rejects_bad_input(name, request, tmp_path):
    cli = pytest.importorskip("auditor.cli")
    from click.testing import CliRunner

    case = CASES[name]
    path = case_path(case, request)
    before = fingerprint(path)
    out = tmp_path / "out"

    result = CliRunner().invoke(
        cli.main,
        [str(path), "--teacher", TEACHER, "--out", str(out), *case.cli_args()],
    )  # no API key (conftest removes it): a bad input must be reported before any backend is needed

    output = result.output  # stdout and stderr together (click >= 8.2)
    assert result.exit_code == 2, output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output
    compact = "".join(output.split())  # a console may wrap a long path
    assert (f"{path}:{case.line}" if case.line is not None else str(path)) in compact, output
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()], "files were written for a bad input"
    assert fingerprint(path) == before
