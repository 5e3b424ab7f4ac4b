"""The black-box fingerprint on real teacher data: GPT-4.1-nano's numbers differ from Qwen's; two halves
of one dataset do not; and two Qwen teachers with different hidden traits (dolphin, elephant) look alike,
which is why a fingerprint never clears a trait."""

import json

from click.testing import CliRunner
from conftest import REAL, need_real_data

from auditor.cli import main


def _rows(path, start, stop):
    return [json.loads(line) for line in path.read_text().splitlines()[start:stop]]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _fingerprint(data, reference, out):
    result = CliRunner().invoke(main, [str(data), "--reference", str(reference), "--detectors", "fingerprint", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    det = report["detectors"][0]
    assert det["status"] == "ran", det
    assert all(t["verdict"] == "inconclusive" for t in report["traits"]), "a fingerprint never sets a trait's level"
    return det["metrics"]


def test_fingerprint_separates_teachers_and_not_halves(tmp_path):
    need_real_data()
    dolphin = REAL / "qwen2.5-7b-instruct" / "dolphin.jsonl"
    a = _write(tmp_path / "a.jsonl", _rows(dolphin, 0, 1500))
    c = _write(tmp_path / "c.jsonl", _rows(dolphin, 1500, 3000))
    nano = REAL / "gpt-4.1-nano-control" / "filtered.jsonl"
    across = _fingerprint(nano, a, tmp_path / "na")
    within = _fingerprint(a, c, tmp_path / "ac")
    assert across["differs"] and across["interval"][0] > 0.7
    assert not within["differs"] and within["interval"][0] <= 0.5 <= within["interval"][1]
