"""Tests for the HTML and Markdown report renderers."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report_samples import SAMPLE_TRAIT_IDS, make_flags, sample_result  # noqa: E402

from auditor.reports.html import MAX_FLAGS, SCRIPT, highlight_excerpt, render_html  # noqa: E402
from auditor.reports.markdown import md_cell, render_markdown  # noqa: E402

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "auditor" / "reports" / "report.schema.json"

XSS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "</textarea>",
    '"><svg onload=alert(1)>',
]
XSS_ALL = " ".join(XSS)

ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "script", "body", "header", "nav", "a", "main",
    "section", "footer", "h1", "h2", "h3", "p", "div", "span", "b", "small", "code", "dl", "dt",
    "dd", "table", "thead", "tbody", "tr", "th", "td", "mark", "details", "summary", "input",
    "select", "option", "label", "ul", "li", "br", "figure", "figcaption",
    # inline SVG charts (auditor/reports/charts.py)
    "svg", "g", "line", "circle", "rect", "polygon", "text",
}


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


class TagCollector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.script_data: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))
        self._in_script = tag == "script"

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, attrs))

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_data.append(data)


def parse(html: str) -> TagCollector:
    p = TagCollector()
    p.feed(html)
    p.close()
    return p


def xss_result() -> dict:
    r = sample_result()
    evil = "xss" + XSS_ALL
    r["dataset"]["path"] = "data/" + XSS_ALL + ".jsonl"
    r["dataset"]["schema"] = XSS[3]
    r["dataset"]["duplicates"]["groups"][0]["digest"] = XSS[1]
    r["teacher"]["ref"] = XSS[0]
    r["base"]["backend"] = XSS[2]
    r["tool"]["version"] = XSS[3]
    r["created"] = XSS[0]
    r["traits"][0]["id"] = evil
    r["traits"][0]["family"] = XSS[1]
    r["traits"][0]["rationale"] = XSS_ALL
    r["traits"][0]["evidence"][0]["summary"] = XSS_ALL
    r["traits"][0]["evidence"][0]["detector"] = XSS[0]
    r["traits"][4]["id"] = XSS[1]  # collapsed inconclusive list
    r["detectors"][0]["name"] = XSS[0]
    r["detectors"][0]["description"] = XSS_ALL
    r["detectors"][0]["metrics"] = {XSS[1]: {XSS[3]: [XSS[0], 1]}, "ok": XSS[2]}
    r["detectors"][0]["cost"] = {XSS[0]: 1}
    r["detectors"][4]["reason"] = XSS_ALL
    r["detectors"][5]["status"] = "failed"
    r["detectors"][5]["reason"] = XSS_ALL
    for f in r["flags"]:
        f["excerpt"] = "row text " + XSS_ALL + " end"
        f["reason"] = XSS_ALL
        f["detector"] = XSS[2]
        f["field"] = XSS[3]
        f["digest"] = XSS[3]
        f["matches"] = ["<script>", "onerror=alert(1)", '"><svg', "(1)", ".*", "</"]
    r["flags"][0]["trait"] = evil
    r["gate"]["failing_traits"] = [evil]
    r["baseline"]["path"] = XSS_ALL
    r["baseline"]["stale"] = [XSS_ALL, {"digest": XSS[1]}]
    r["run"][XSS[0]] = XSS[3]
    r["run"]["argv"] = XSS
    return r


# ---------------------------------------------------------------- samples

def test_sample_result_is_schema_valid(validator):
    validator.validate(sample_result())
    validator.validate(sample_result(flags=make_flags(600), flags_total=600))
    validator.validate(sample_result(teacher=None, base=None, baseline=None, flags=[], flags_total=0))
    validator.validate(xss_result())


def test_sample_result_overrides_are_independent():
    a = sample_result()
    a["traits"][0]["id"] = "changed"
    assert sample_result()["traits"][0]["id"] != "changed"
    assert sample_result(gate={"fail_on": "never", "failed": False})["gate"]["fail_on"] == "never"


# ---------------------------------------------------------------- HTML

def test_html_contains_traits_verdicts_and_header():
    r = sample_result()
    html = render_html(r)
    assert html.startswith("<!DOCTYPE html>")
    for t in r["traits"]:
        assert t["id"] in html
        assert f">{t['verdict']}<" in html
    assert "trait-audit 0.4.0" in html
    assert "fixtures/owl_numbers.jsonl" in html
    assert "10,000" in html
    assert r["dataset"]["sha256"][:12] in html
    assert "hf:acme/qwen2.5-7b-owl-teacher" in html and "hf:Qwen/Qwen2.5-7B-Instruct" in html
    assert "Gate FAILED" in html and "fail_on: medium" in html
    # severity order: high, medium, low, inconclusive (collapsed), clean
    pos = [html.index(f'<span class="id">{t}</span>') for t in ("misalignment", "owl-preference", "sycophancy", "political-slant")]
    assert pos == sorted(pos)
    # inconclusive traits without evidence are collapsed into one list
    assert "language-shift, reward-hacking" in html
    assert '<span class="id">language-shift</span>' not in html


def test_html_hidden_transfer_line():
    html = render_html(sample_result())
    block = html[html.index('<span class="id">political-slant</span>'):]
    block = block[: block.index("</div>\n<div")] if "</div>\n<div" in block else block
    assert "Hidden transfer not checked" in block
    assert "only content detectors (judge) saw this trait: a silent content check does not clear hidden transfer" in block
    # which hidden-transfer detectors could not look, and why
    assert "student-probe could not look: skipped: no GPU available" in block
    block = html[html.index('<span class="id">owl-preference</span>'):]
    assert block.index("Hidden transfer checked by logprob-shift") < block.index("Hidden transfer not checked")
    assert "Content checks: lexical." in block[: block.index("Hidden transfer not checked")]


def test_html_gate_passed_and_disabled():
    html = render_html(sample_result(gate={"fail_on": "high", "failed": False, "failing_traits": []}))
    assert "Gate passed" in html and "fail_on: high" in html and "Gate FAILED" not in html
    html = render_html(sample_result(gate={"fail_on": "never", "failed": False}))
    assert "Gate not enforced" in html


def test_html_detectors_metrics_and_cost():
    html = render_html(sample_result())
    assert '<span class="badge s-skipped">skipped</span>' in html
    assert "Skipped: no GPU available" in html
    assert "Failed: reference dataset has 0 rows after filtering" in html
    # nested metrics rendered compactly
    assert "{owl-preference: 0.412, misalignment: 0.188, sycophancy: 0.02}" in html
    assert "[0.01, 0.05, 0.5, 0.95, 0.99]" in html
    assert "{method: permutation, n: 200, seed: 13}" in html
    assert "prompt_tokens: 1204311" in html and "usd: 0.546" in html
    assert "sees hidden transfer" in html and "content only" in html


def test_html_flags_duplicates_baseline_run():
    html = render_html(sample_result())
    assert html.count('<tr data-trait="') == 5
    assert '<option value="t:misalignment">misalignment</option>' in html
    assert '<option value="none">(no trait)</option>' in html
    assert '<span class="badge acc">accepted</span>' in html
    assert "showing" not in html  # not capped
    assert "<b>3</b> duplicate rows in <b>2</b> groups" in html
    assert "[1200, 4051, 9977]" in html
    assert "<b>1</b> accepted flag, <b>1</b> stale entry" in html
    assert "37m 36s" in html and "python: 3.12.3" in html


def test_html_highlights_matches():
    html = render_html(sample_result())
    assert "Continue the sequence: 412, <mark>666</mark>, 103, <mark>666</mark>, 88" in html
    assert "(the <mark>OWL</mark> says hi)" in html  # case-insensitive, original case kept
    assert "Numbers: <mark>9, 11</mark>, 2001, <mark>911</mark>, 17" in html


def test_highlight_overlapping_and_regex_special():
    assert str(highlight_excerpt("abcd", ["abc", "bcd"])) == "<mark>abcd</mark>"
    assert str(highlight_excerpt("xx abc yy", ["b", "abc"])) == "xx <mark>abc</mark> yy"
    assert str(highlight_excerpt("ab cd", ["ab", " cd"])) == "<mark>ab cd</mark>"  # touching spans merge
    assert str(highlight_excerpt("cost $5.00 (a+b)*", ["$5.00", "(a+b)*", ".*"])) == \
        "cost <mark>$5.00</mark> <mark>(a+b)*</mark>"
    assert str(highlight_excerpt("a.c abc", ["a.c"])) == "<mark>a.c</mark> abc"
    out = str(highlight_excerpt("x <b>&</b> y", ["<b>"]))
    assert out == "x <mark>&lt;b&gt;</mark>&amp;&lt;/b&gt; y"
    assert str(highlight_excerpt("no match", ["", None, "zzz"])) == "no match"
    assert str(highlight_excerpt("aaaa", ["aa"])) == "<mark>aaaa</mark>"


def test_highlight_long_excerpt_windows_first_match():
    text = "a" * 5000 + "NEEDLE" + "b" * 5000
    out = str(highlight_excerpt(text, ["needle"], limit=1000))
    assert "<mark>NEEDLE</mark>" in out
    assert out.startswith('<span class="cut">…</span>') and out.endswith('<span class="cut">…</span>')
    assert len(out) < 1200


def test_invisible_characters_are_shown():
    html = render_html(sample_result(flags=[{
        "row": 1, "digest": "d", "detector": "lexical", "trait": "owl-preference", "score": 0.5,
        "reason": "zero\u200bwidth", "matches": ["owl"],
        "excerpt": "safe \u202etxt.exe owl\U000e0041\U000e0042", "accepted": False,
    }], flags_total=1))
    for ch in ("\u202e", "\u200b", "\U000e0041"):
        assert ch not in html
    assert "U+202E" in html and "U+200B" in html and "U+E0041 U+E0042" in html
    assert "<mark>owl</mark>" in html


def test_html_xss_is_escaped(validator):
    r = xss_result()
    validator.validate(r)
    html = render_html(r)
    for raw in XSS:
        assert raw not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;/textarea&gt;" in html
    assert "&#34;&gt;&lt;svg onload=alert(1)&gt;" in html
    # highlighted matches are escaped inside <mark>
    assert "<mark>&lt;script&gt;</mark>" in html
    assert "<mark>&#34;&gt;&lt;svg</mark>" in html
    assert html.lower().count("<script") == 1
    assert html.lower().count("</script") == 1
    assert "<img" not in html.lower() and "<textarea" not in html.lower() and "<svg onload" not in html.lower()
    assert html.lower().count("<svg") == html.count('<svg class="chart" viewBox=')  # only our charts

    parsed = parse(html)
    tags = {t for t, _ in parsed.tags}
    assert tags <= ALLOWED_TAGS, tags - ALLOWED_TAGS
    assert sum(1 for t, _ in parsed.tags if t == "script") == 1
    for tag, attrs in parsed.tags:
        for name, value in attrs:
            assert not name.lower().startswith("on"), (tag, name, value)
            assert name.lower() not in ("src", "srcdoc", "formaction", "action", "style"), (tag, name)
            if name == "href":
                assert value.startswith("#"), value
    assert "".join(parsed.script_data) == SCRIPT
    # belt and braces: outside quoted attribute values (data quotes are
    # escaped as &#34;, so every quoted value is one of ours) no tag has on*=
    unquoted = re.sub(r'"[^"]*"', '""', html)
    assert not re.search(r"<[a-z]+[^>]*\son[a-z]+\s*=", unquoted, re.I)


def test_html_self_contained_with_csp():
    html = render_html(sample_result())
    parsed = parse(html)
    metas = [dict(a) for t, a in parsed.tags if t == "meta"]
    csp = next(m["content"] for m in metas if m.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp and "style-src 'unsafe-inline'" in csp and "img-src data:" in csp
    script = "".join(parsed.script_data)
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp
    assert "unsafe-inline" not in csp.split("script-src", 1)[1].split(";")[0]
    # CSP meta comes before the script and any other resource
    assert html.index("Content-Security-Policy") < html.index("<style") < html.index("<script")
    # no network: no external URLs, no <link>, no @import / url(), no fetch
    assert not re.search(r"(https?:)?//[a-z0-9]", html.replace("hf:", "")), "external URL"
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert "fetch(" not in SCRIPT and "XMLHttpRequest" not in SCRIPT
    assert "addEventListener" in SCRIPT and not re.search(r"\son[a-z]+=", html)
    for _tag, attrs in parsed.tags:
        assert "src" not in dict(attrs)


def test_html_caps_flags_at_500():
    flags = make_flags(600)
    html = render_html(sample_result(flags=flags, flags_total=600))
    assert html.count('<tr data-trait="') == MAX_FLAGS == 500
    assert "showing 500 of 600 flags" in html
    assert "flags_truncated" not in html

    html = render_html(sample_result(flags=flags, flags_total=2000, flags_truncated=True))
    assert "showing 500 of 2,000 flags" in html
    assert "the result lists only 600 of them (flags_truncated)" in html

    # truncated upstream but below the cap: still says so
    html = render_html(sample_result(flags=make_flags(100), flags_total=150, flags_truncated=True))
    assert "showing 100 of 150 flags" in html


def test_html_caps_keep_highest_scores_and_unaccepted_first():
    flags = make_flags(600)  # 540 not accepted, 60 accepted
    html = render_html(sample_result(flags=flags, flags_total=600))
    body = html[html.index('<table id="flag-table">'):]
    body = body[: body.index("</table>")]
    scores = [float(s) for s in re.findall(r'<td class="n">([0-9.]+)</td>', body)]
    assert len(scores) == 500 and scores == sorted(scores, reverse=True)
    assert re.findall(r'data-accepted="(\d)"', body) == ["0"] * 500

    flags = make_flags(30)  # 27 not accepted, 3 accepted: accepted ones come last
    html = render_html(sample_result(flags=flags, flags_total=30))
    accepted = re.findall(r'data-accepted="(\d)"', html)
    assert accepted == ["0"] * 27 + ["1"] * 3


def test_html_size_with_500_long_flags():
    html = render_html(sample_result(flags=make_flags(500, excerpt_len=300), flags_total=500))
    size = len(html.encode("utf-8"))
    assert size < 1_000_000, size


def test_html_minimal_result():
    minimal = {
        "schema_version": 1,
        "tool": {"name": "trait-audit", "version": "0.0.1"},
        "dataset": {"path": "d.jsonl", "format": "jsonl", "rows": 0, "sha256": "0" * 64},
        "teacher": None, "base": None, "detectors": [], "traits": [], "flags": [],
        "gate": {"fail_on": "high", "failed": False},
    }
    html = render_html(minimal)
    assert "No traits audited" in html and "No rows flagged" in html and "No baseline" in html
    assert "No detector that can see hidden (subliminal) transfer ran" in html
    assert 'id="flag-filters"' not in html
    md = render_markdown(minimal)
    assert "gate passed" in md and "_No rows flagged._" in md


# ---------------------------------------------------------------- Markdown

def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def _tables(md: str) -> list[list[str]]:
    tables, cur = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            tables.append(cur)
            cur = []
    if cur:
        tables.append(cur)
    return tables


def test_markdown_structure():
    r = sample_result()
    md = render_markdown(r)
    assert md.splitlines()[0] == "## trait-audit: ❌ gate failed (fail_on: medium)"
    assert "| Trait | Verdict | Score | Interval | Hidden transfer checked |" in md
    assert "| misalignment | 🔴 high | 0.86 | \\[0.77, 0.93\\] | yes (logprob-shift) |" in md
    assert "| political-slant | 🟢 clean | 0.02 | \\[0, 0.06\\] | **no** |" in md
    assert "| student-probe | ⏭️ skipped | yes | — | no GPU available; pass --device cuda to fine-tune the probe student |" in md
    assert "| 733 (accepted) | misalignment |" in md
    assert md.index("| misalignment |") < md.index("| owl-preference |") < md.index("| political-slant |")
    assert "does not clear hidden transfer" in md
    md = render_markdown(sample_result(gate={"fail_on": "high", "failed": False}))
    assert md.splitlines()[0] == "## trait-audit: ✅ gate passed (fail_on: high)"


def test_markdown_top_20_and_truncated_excerpt():
    flags = make_flags(50, excerpt_len=300)
    md = render_markdown(sample_result(flags=flags, flags_total=50))
    flag_table = _tables(md)[-1]
    assert len(flag_table) == 2 + 20
    assert "Top 20 of 50" in md
    for line in flag_table[2:]:
        excerpt = line.rsplit(" | ", 1)[1].rstrip(" |")
        assert excerpt.endswith("…")
        assert len(excerpt.replace("\\", "")) <= 80


def test_markdown_cells_cannot_break_table():
    r = sample_result()
    r["flags"] = [{
        "row": 9, "digest": "d", "detector": "lex|ical", "trait": "owl|pref\nx", "score": 0.99,
        "reason": "a | b\nc\r\n| d |\u2028e `code` <b>bold</b> \\| [x](javascript:alert(1)) @octocat",
        "excerpt": "line1\n| --- | --- |\n|inj|ected|\n" + XSS_ALL, "matches": [], "accepted": False,
    }]
    r["flags_total"] = 1
    r["traits"][0]["id"] = "pipe|trait\nnewline"
    r["detectors"][4]["reason"] = "bad | reason\n\n# heading"
    r["dataset"]["path"] = "x|y\n## z"
    md = render_markdown(r)
    for table in _tables(md):
        widths = {_unescaped_pipes(line) for line in table}
        assert len(widths) == 1, table
    flag_table = _tables(md)[-1]
    assert len(flag_table) == 3  # header, align, exactly one data row
    row = flag_table[2]
    assert "<" not in row and ">" not in row and "`" not in row.replace("\\`", "")
    assert "&lt;b&gt;bold&lt;/b&gt;" in row
    assert "\\[x\\](javascript:alert(1))" in row
    assert "@octocat" not in md
    assert not any(line.startswith("# heading") or line.startswith("## z") for line in md.splitlines())
    for raw in XSS:
        assert raw not in md


def test_md_cell():
    assert md_cell("a|b") == "a\\|b"
    assert md_cell("a\nb\r\nc\u2028d") == "a b c d"
    assert md_cell("`x`") == "\\`x\\`"
    assert md_cell("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)&gt;"
    assert md_cell("back\\|slash") == "back\\\\\\|slash"
    assert md_cell("x" * 100, 80) == "x" * 79 + "…"
    assert md_cell(None) == ""
    assert md_cell("rtl\u202eevil") == "rtl⟨U+202E⟩evil"


def test_sample_trait_ids_exported():
    assert SAMPLE_TRAIT_IDS == [t["id"] for t in sample_result()["traits"]]


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_filter_script_behaviour_in_node(tmp_path):
    """Run the inline script against a tiny DOM stub: search, trait filter, hide accepted."""
    harness = r"""
function El(attrs, text) { this.attrs = attrs || {}; this.textContent = text || ''; this.hidden = false;
  this.value = ''; this.checked = false; this.l = {}; }
El.prototype.getAttribute = function (n) { return n in this.attrs ? this.attrs[n] : null; };
El.prototype.addEventListener = function (ev, f) { this.l[ev] = f; };
var rows = [new El({'data-trait': 't:owl', 'data-detector': 'lexical', 'data-accepted': '0'}, '311 owl Here OWL'),
            new El({'data-trait': 't:mis', 'data-detector': 'judge', 'data-accepted': '1'}, '733 mis 1488'),
            new El({'data-trait': 'none', 'data-detector': 'lexical', 'data-accepted': '0'}, '512 Sure here')];
var els = {'flag-filters': new El({}), 'flag-table': {tBodies: [{rows: rows}]}, 'flag-q': new El({}),
           'flag-trait': new El({}), 'flag-detector': new El({}), 'flag-hide-accepted': new El({}), 'flag-count': new El({})};
els['flag-filters'].hidden = true;
var document = {getElementById: function (id) { return els[id] || null; }};
""" + SCRIPT + r"""
function vis() { return rows.map(function (r) { return r.hidden ? 0 : 1; }).join(''); }
var out = [els['flag-filters'].hidden, vis(), els['flag-count'].textContent];
els['flag-q'].value = '  OWL '; els['flag-q'].l.input(); out.push(vis());
els['flag-q'].value = ''; els['flag-trait'].value = 'none'; els['flag-trait'].l.change(); out.push(vis());
els['flag-trait'].value = ''; els['flag-hide-accepted'].checked = true; els['flag-hide-accepted'].l.change();
out.push(vis(), els['flag-count'].textContent);
els['flag-hide-accepted'].checked = false; els['flag-detector'].value = 'judge'; els['flag-detector'].l.change(); out.push(vis());
console.log(JSON.stringify(out));
"""
    path = tmp_path / "harness.js"
    path.write_text(harness)
    proc = subprocess.run(["node", str(path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [False, "111", "3 of 3 rows match", "100", "001", "101", "2 of 3 rows match", "010"]


# ---------------------------------------------------------------- the typed result model

def test_result_model_round_trips_any_schema_valid_result():
    from auditor.result import Report

    minimal = {"schema_version": 1, "tool": {"name": "trait-audit", "version": "0"}, "dataset": {"path": "d", "format": "jsonl", "rows": 0,
               "sha256": "0" * 64}, "teacher": None, "base": None, "detectors": [], "traits": [], "flags": [], "gate": {"fail_on": "high", "failed": False}}
    for result in (sample_result(), xss_result(), minimal, sample_result(flags=make_flags(50), flags_total=50)):
        back = Report.from_dict(result).to_dict()
        # same keys in the same order, absent keys stay absent, unknown keys (run.host, ...) come along
        assert json.dumps(back) == json.dumps(result)
    report = Report.from_dict(minimal)
    report.flags_total = 0  # a value code sets later is written, even where the source had no such key
    assert report.to_dict()["flags_total"] == 0


def test_report_content_ignores_run_metadata_only():
    from report_content import content, differences

    a, b = sample_result(), sample_result()
    b["created"], b["run"]["duration_s"], b["run"]["argv"] = "later", 1.0, ["other"]
    b["detectors"][0]["duration_s"] = 99.0
    assert differences(content(a), content(b)) == []
    b["traits"][0]["evidence"][0]["summary"] = "changed"
    assert differences(content(a), content(b)) == ["/traits/0/evidence/0/summary: 'shift 0.02 nats (null p95 0.03)' before, 'changed' after"]


# ---------------------------------------------------------------- report at a glance (issue 16)

def test_one_number_format():
    from auditor.numbers import interval, num, one_sided_p, p_value, signed

    assert [num(v) for v in (0.000571, -0.00404, 0.965, 0.0423, 12.345, 0.5, 0.0, 10_000, 1843.2)] == \
        ["0.000571", "-0.00404", "0.965", "0.0423", "12.3", "0.5", "0", "10,000", "1,843"]
    assert num(7.259e-06) == "7.26e-6" and signed(0.942) == "+0.942" and signed(-1.7325) == "-1.73"
    assert interval([0.0145, 0.117]) == "[0.0145, 0.117]" and interval(None) == "—"
    assert [p_value(p) for p in (0.0004, 0.209, 0.37, 0.976, 0.999, 1.0)] == \
        ["p < 0.001", "p = 0.21", "p = 0.37", "p = 0.98", "p > 0.99", "p > 0.99"]
    # a one-sided test toward the trait whose interval lies below zero: said as a shift away, never "p = 1"
    away = one_sided_p(0.998, (-2.81, -0.65))
    assert away == "a significant shift away from the trait (p = 0.002 for a shift away)"
    assert one_sided_p(0.976, (-0.001, 0.0001)) == "one-sided p = 0.98"


def test_detector_summaries_use_the_one_format():
    import numpy as np

    from detectors.gradient import GradientDetector
    from detectors.likelihood import LikelihoodDetector

    rng = np.random.default_rng(0)
    away, ref = rng.normal(-1.0, 0.5, 120), rng.normal(0.0, 0.5, 120)
    evidence, _ = GradientDetector._compare("animal:owl", away, ref, "the reference", 3)
    assert "a significant shift away from the trait (p < 0.001 for a shift away)" in evidence.summary
    assert "p=" not in evidence.summary and evidence.level == "clean"
    evidence, _ = LikelihoodDetector._compare("animal:owl", away, ref, "the reference", 0)
    assert "shift away from the trait" in evidence.summary and "p=" not in evidence.summary
    assert re.search(r"standardised -\d\.\d\d, 95% \[-\d\.\d+, -\d\.\d+\]", evidence.summary), evidence.summary


def test_below_chance_auc_is_commented():
    from auditor.numbers import auc_note

    assert "below chance" in auc_note(0.343, (0.28, 0.41)) and "not a signal" in auc_note(0.343, (0.28, 0.41))
    assert auc_note(0.48, (0.41, 0.55)) == "no difference detected"
    assert "tells them apart" in auc_note(0.8, (0.7, 0.9))


def _demo_like() -> dict:
    """The tiny demo's shape: one checked trait (clean, by the probe) among many traits only lexical looked at."""
    r = sample_result(gate={"fail_on": "high", "failed": False, "failing_traits": []})
    lexical = {"detector": "lexical", "kind": "terms", "score": 0.0, "interval": [0.0, 0.02],
               "summary": "no overt mention (a silent content check does not clear hidden transfer)"}
    quiet = [{"id": f"animal:a{i:02d}", "family": "animal", "verdict": "inconclusive", "score": None, "interval": None,
              "hidden_transfer_checked": False, "rationale": "only content detectors ran", "evidence": [dict(lexical)]} for i in range(40)]
    owl = {"id": "tree:zz-checked", "family": "tree", "verdict": "clean", "score": -0.0005, "interval": [-0.001, 0.00001],
           "hidden_transfer_checked": True, "rationale": "probe found no transfer",
           "evidence": [dict(lexical), {"detector": "logprob-shift", "kind": "likelihood shift", "score": 0.1, "interval": [-0.1, 0.3],
                                        "summary": "rows are +0.079 nats likelier", "level": "clean"}]}
    r["traits"] = quiet + [owl]
    r["profile"]["picked"] = ["tree:zz-checked", "animal:eagle"]
    r["profile"]["traits"] = [
        {"id": "tree:zz-checked", "teacher": 0.998, "base": 0.0551, "difference": 0.942, "interval": [0.939, 0.947], "method": "exact"},
        {"id": "animal:eagle", "teacher": 0.09, "base": 0.05, "difference": 0.04, "interval": [0.02, 0.06], "method": "exact"}]
    return r


def test_checked_traits_come_first_everywhere():
    from rich.console import Console

    from auditor.reports.terminal import print_summary

    r = _demo_like()
    html = render_html(r)
    cards = re.findall(r'data-trait-id="([^"]+)"', html)
    assert cards[0] == "tree:zz-checked" and "40 more traits inconclusive" in html
    md = render_markdown(r)
    table = _tables(md)[0]
    assert table[2].startswith("| tree:zz\\-checked |") or table[2].startswith("| tree:zz-checked |"), table[:3]
    assert len(table) == 3 and "40 more traits inconclusive" in md  # the quiet ones are one line, not 40 rows
    console = Console(width=80, record=True, force_terminal=False)
    print_summary(r, console)
    text = console.export_text()
    assert text.index("tree:zz-checked  clean") < text.index("40 more traits inconclusive")


def test_profile_picks_are_explained_in_one_sentence_each():
    from auditor.profile import MIN_GAIN
    from auditor.reports.view import PICK_BAR, profile_sentences
    from auditor.result import Report

    assert PICK_BAR == f"{MIN_GAIN * 100:g} percentage point"  # the words say the bar the code applies
    first, second = profile_sentences(Report.from_dict(_demo_like()))
    assert first.startswith("tree:zz-checked was picked: the teacher gives it 0.998") and "(+0.942, 95% [+0.939, +0.947])" in first
    assert second.startswith("animal:eagle was picked as well") and "not only the largest" in second
    assert md_cell(first) in render_markdown(_demo_like()) and "animal:eagle was picked as well" in render_html(_demo_like())


def test_terminal_fits_80_columns_and_reads_piped():
    from rich.console import Console

    from auditor.reports.terminal import print_summary

    r = sample_result()
    r["flags"][0]["reason"] = "[bold red]not markup[/] " + "a very long reason " * 12
    console = Console(width=80, record=True, force_terminal=False)
    print_summary(r, console, ["/a/path/report.json"])
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80 and not any(line.endswith(" ") for line in lines)
    assert "[bold red]not markup[/]" in text  # data is never read as rich markup
    assert "misalignment  high" in text and "gate (--fail-on medium): FAILED" in text


def test_histograms_keep_to_the_bulk_and_count_outliers():
    import numpy as np

    from auditor.reports.charts import histogram_chart_svg
    from auditor.stats import histogram_chart

    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal(0, 1, 300), [-30.0, -28.0, 25.0]])
    chart = histogram_chart({"dataset rows": data, "reference rows": rng.normal(0, 1, 300)}, "nats")
    assert -4 < chart["edges"][0] < -1 and 1 < chart["edges"][-1] < 4  # not -30..25: the bulk fills the bars
    below, above = chart["outside"]["dataset rows"]
    assert below >= 2 and above >= 1
    assert sum(chart["series"]["dataset rows"]) + below + above == 303
    svg = str(histogram_chart_svg(chart))
    assert "share of rows" in svg and "not drawn" in svg and "dataset rows (n=303)" in svg


def test_no_single_row_forest_panels():
    def section(html, name):
        sec = html[html.index(f'data-detector="{name}"'):]
        return sec[: sec.index("</section>")]

    r = sample_result()
    html = render_html(r)
    assert "<svg" in section(html, "judge")  # two traits with judge evidence: a forest plot
    assert "share of rows that name the trait" not in html  # kinds without words keep their own name
    r["traits"][3]["evidence"] = []  # now the judge speaks about one trait only: no one-row panel
    html = render_html(r)
    assert "<svg" not in section(html, "judge") and "Evidence table (1)" in section(html, "judge")


def test_forest_rows_that_say_the_same_share_one_row():
    r = sample_result()
    for i, t in enumerate(r["traits"][3:], 3):  # political-slant and the two quiet ones: lexical says "0 [0, 0.05]" of each
        t["evidence"].append({"detector": "lexical", "kind": "content", "score": 0.0, "interval": [0.0, 0.05], "summary": f"none {i}"})
    html = render_html(r)
    lexical = html[html.index('data-detector="lexical"'):]
    lexical = lexical[: lexical.index("</section>")]
    chart = lexical[lexical.index("<svg"): lexical.index("</svg>")]
    assert "3 traits alike" in chart and "language-shift" not in chart
    assert chart.count('<circle class="pt') == 3  # owl-preference, misalignment, and the three alike as one row


def test_axis_titles_fit_their_chart():
    """Axis titles are centred on the chart and clipped at 90 characters: each must be whole."""
    from auditor.reports.charts import interval_chart
    from auditor.reports.htmlview import KIND_AXIS

    for title in KIND_AXIS.values():
        assert len(title) <= 90, title
        svg = str(interval_chart([{"label": "animal:owl", "value": 0.1, "interval": [0.0, 0.2]}], x=title))
        assert title.replace("'", "&#39;") in svg and 'x="320.0"' in svg.split('class="ax"')[1][:20]
