"""The study report: report.html (self-contained), report.md, report.json and the figures, written
all or nothing; checked by parsing, by decoding every inlined PNG, in a real headless Chromium,
and on a tiny real study trained here."""

import base64
import copy
import io
import itertools
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from beyondbp.analysis.scaling import Intervals
from beyondbp.errors import ConfigError
from beyondbp.reporting import study as report_mod
from beyondbp.reporting.study import write_report
from beyondbp.study.spec import load_spec
from beyondbp.study.verdict import judge_study

sys.path.insert(0, str(Path(__file__).parent))
from test_study_analysis import record, records_for  # noqa: E402

SPEC = """\
[study]
name = "tiny-report"
description = "dfa vs backprop on a tiny MLP"

[base]
model = "mlp"
data = "mnist1d"
data_options = {num_samples = 400}
batch_size = 32
lr = 0.01

[axes]
rule = ["backprop", "dfa"]
model_options = [{widths = [8]}, {widths = [32]}]
steps = [20, 40]
seed = [0, 1]

[execution]
diagnostics = true
"""
#: a small grid of starts for L(N, D) (the default 4,500 starts are slow for a test)
STARTS = list(itertools.product([4.0, 7.0], [4.0, 7.0], [0.0, 0.5], [0.3, 0.5], [0.3, 0.5]))
FIGURES = {"frontier.png", "loss_law.png", "curves.png", "alignment.png"}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "spec.toml"
    path.write_text(SPEC)
    return load_spec(path)


def synthetic_records():
    rng = np.random.default_rng(0)
    bp = lambda N, D, C: 1.5 + 400.0 / N**0.35 + 600.0 / D**0.3  # noqa: E731
    dfa = lambda N, D, C: 1.8 + 900.0 / N**0.4 + 700.0 / D**0.28  # noqa: E731
    lrs = (1e-3, 1e-2)
    recs = records_for("backprop", bp, lrs=lrs, rng=rng, lr_loss=lambda lr: 0.2 * (lr == 1e-2))
    recs += records_for("dfa", dfa, lrs=lrs, rng=rng, start=1000, lr_loss=lambda lr: 0.2 * (lr == 1e-3))
    for r in recs:
        steps, loss = r["result"]["steps"], r["result"]["final"]["test_loss"]
        r["result"]["history"] = [
            {"epoch": i + 1, "step": s, "test_loss": loss * (1 + 0.5 / (i + 1)),
             "diagnostics": {"cos/all": 1.0 if r["label"] == "backprop" else 0.2 + 0.1 * i}}
            for i, s in enumerate((steps // 4, steps // 2, steps))
        ]  # fmt: skip
    recs.append(record(9000, "dfa", 1000, 100, 0, 1e-2, 5.0, status="diverged"))
    recs.append(record(9001, "dfa", 1000, 100, 1, 1e-2, 5.0, status="failed"))
    return recs


@pytest.fixture(scope="module")
def synthetic():
    recs = synthetic_records()
    return recs, judge_study(recs, n_bootstrap=10, loss_law_starts=STARTS)


@pytest.fixture(scope="module")
def written(tmp_path_factory, spec, synthetic):
    recs, analysis = synthetic
    out = tmp_path_factory.mktemp("rep") / "report"
    paths = write_report(spec, recs, out, analysis=analysis)
    return out, paths, recs, analysis


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.tables, self.tags = [], 0, []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs))
        if tag == "table":
            self.tables += 1


def _parse(text):
    p = _Collect()
    p.feed(text)
    return p


def _decode_png(data: bytes):
    from matplotlib.image import imread

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(io.BytesIO(data), format="png")


def test_files_written(written):
    out, paths, recs, analysis = written
    assert set(paths) == {"report.html", "report.md", "report.json"} | FIGURES
    assert sorted(p.name for p in out.iterdir()) == sorted([*paths, ".beyondbp-manifest.json"])  # the manifest lists what the report wrote
    payload = json.loads((out / "report.json").read_text())
    assert payload["beyondbp_report"] == 1 and payload["spec"]["name"] == "tiny-report"
    assert payload["analysis"] == json.loads(json.dumps(analysis.to_dict()))  # the analysis, serialised by the writer
    assert payload["analysis"]["verdicts"]["dfa"]["sentence"] == analysis.verdicts["dfa"].sentence
    assert len(payload["runs"]) == len(recs) and payload["figures"] == sorted(FIGURES)
    md = (out / "report.md").read_text()
    for name in FIGURES:
        assert f"]({name})" in md
        _decode_png((out / name).read_bytes())
    assert analysis.verdicts["dfa"].sentence in md
    assert "| label | other axes | N | D |" in md and "[study]" in md


def test_html_content_and_inline_pngs(written):
    out, paths, recs, analysis = written
    text = (out / "report.html").read_text()
    page = _parse(text)
    assert len(page.imgs) == len(FIGURES)
    for img in page.imgs:
        src = img["src"]
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert _decode_png(raw).shape[0] > 100
        assert img.get("alt")
    inline = {base64.b64decode(i["src"].split(",", 1)[1]) for i in page.imgs}
    assert inline == {(out / n).read_bytes() for n in FIGURES}
    # verdicts, warnings, runs by status, fitted parameters, predictive checks, best LR, problems, versions
    assert page.tables == 8
    for heading in ("Verdict", "Runs by status", "Fitted parameters", "Best learning rate per size and budget",
                    "L(N, D) iso-loss contours", "Learning curves", "Gradient alignment to backprop",
                    "Versions and hosts", "The spec"):  # fmt: skip
        assert f"<h2>{heading}</h2>" in text
    assert "dfa vs backprop: " in text and "name = &quot;tiny-report&quot;" in text
    assert "L(N, D) = E + A/N^α + B/D^β" in text and "L(C) = E + A·C^(−α)" in text
    assert "diverged" in text and "boom" in text  # the diverged and failed runs are listed
    # self-contained: no script, no external resources
    assert "script" not in page.tags and "link" not in page.tags
    assert 'src="http' not in text and "url(" not in text


def test_refuses_foreign_directory_and_replaces_previous_report(tmp_path, spec, synthetic, monkeypatch):
    recs, analysis = synthetic
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        write_report(spec, recs, out, analysis=analysis)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    write_report(spec, recs, out, analysis=analysis, overwrite=True)
    assert not (out / "notes.txt").exists() and (out / "report.html").exists()
    # a previous report is replaced without asking
    small = judge_study(recs[:24], n_bootstrap=5, loss_law=False)
    write_report(spec, recs[:24], out, analysis=small)
    assert json.loads((out / "report.json").read_text())["analysis"]["n_records"] == 24
    assert "loss_law.png" not in os.listdir(out)  # old files do not linger
    # a previous report with a foreign file added is no longer "a report"
    (out / "extra.csv").write_text("x")
    with pytest.raises(ConfigError):
        write_report(spec, recs, out, analysis=small)
    link = tmp_path / "link"
    link.symlink_to(out)
    with pytest.raises(ConfigError, match="symbolic link"):
        write_report(spec, recs, link, analysis=small, overwrite=True)
    monkeypatch.chdir(out)
    for here in (out, tmp_path):
        with pytest.raises(ConfigError, match="current directory"):
            write_report(spec, recs, here, analysis=small, overwrite=True)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        write_report(spec, recs, f, analysis=small, overwrite=True)


def test_nothing_half_written_on_error(tmp_path, spec, synthetic, monkeypatch):
    recs, analysis = synthetic
    out = tmp_path / "out"
    write_report(spec, recs, out, analysis=analysis)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(report_mod, "_curves_figure", boom)
    with pytest.raises(RuntimeError):
        write_report(spec, recs[:24], out, analysis=analysis)
    with pytest.raises(RuntimeError):
        write_report(spec, recs, tmp_path / "new", analysis=analysis)
    monkeypatch.undo()
    # fail while writing the files themselves (after some are written into the temporary)
    real = report_mod.files.atomic_write_bytes
    calls = []

    def flaky(path, write):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("no space left")
        return real(path, write)

    monkeypatch.setattr(report_mod.files, "atomic_write_bytes", flaky)
    with pytest.raises(OSError):
        write_report(spec, recs, out, analysis=analysis)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporaries, no "new"


def test_empty_study_report(tmp_path, spec):
    paths = write_report(spec, [], tmp_path / "r")
    assert set(paths) == {"report.html", "report.md", "report.json"}
    text = paths["report.html"].read_text()
    assert "No verdict" in text and "<img" not in text


def test_does_not_mutate_records(tmp_path, spec, synthetic):
    recs, analysis = synthetic
    before = copy.deepcopy(recs)
    write_report(spec, recs, tmp_path / "r", analysis=analysis)
    assert recs == before


# -- a real browser -----------------------------------------------------------------------------
IMG_CHECK = """<script>
window.addEventListener('load', function () {
  var out = [];
  document.querySelectorAll('img').forEach(function (i) { out.push(i.complete && i.naturalWidth > 0 ? 1 : 0); });
  var p = document.createElement('pre'); p.id = 'img-check'; p.textContent = JSON.stringify(out);
  document.body.appendChild(p);
});
</script>"""


def _chromium(page: Path, profile: Path) -> tuple[str, str]:
    exe = shutil.which("chromium")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=3000", f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def _console_errors(stderr: str) -> list[str]:
    """Console messages (Chromium logs console.error at INFO level, so every console line of a
    page without scripts is a problem) and uncaught exceptions."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def _image_check(dom: str) -> list[int]:
    start = dom.index('<pre id="img-check">') + len('<pre id="img-check">')
    return json.loads(dom[start : dom.index("</pre>", start)])


needs_chromium = pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (`which chromium` found nothing)")


@needs_chromium
def test_browser_detectors_catch_problems(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA">'
                   '<script>console.error("boom"); nosuchfn();</script>' + IMG_CHECK + "</body></html>")  # fmt: skip
    dom, err = _chromium(bad, tmp_path / "profile")
    assert _image_check(dom) == [0]
    assert any("Uncaught" in line for line in _console_errors(err))


@needs_chromium
def test_report_in_headless_chromium(written, tmp_path):
    out = written[0]
    dom, err = _chromium(out / "report.html", tmp_path / "profile")
    assert _console_errors(err) == []
    page = _parse(dom)
    assert page.tables == 8 and len(page.imgs) == len(FIGURES)
    first = dom.index("<table>")  # the verdict table opens the page, before any figure or warning
    assert "<th>rule vs baseline</th>" in dom[first : dom.index("</table>", first)]
    assert first < dom.index("<img") and first < dom.index("Warnings and notes")
    shot = tmp_path / "page.png"
    done = subprocess.run([shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'shot'}",
                           f"--screenshot={shot}", "--window-size=1200,2400", (out / "report.html").resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and _decode_png(shot.read_bytes()).shape[:2] == (2400, 1200)
    checked = tmp_path / "checked.html"
    checked.write_text((out / "report.html").read_text().replace("</body>", IMG_CHECK + "\n</body>"))
    dom, err = _chromium(checked, tmp_path / "profile2")
    assert _image_check(dom) == [1] * len(FIGURES)
    assert _console_errors(err) == []


# -- a tiny real study --------------------------------------------------------------------------
def as_record(planned, result):
    """A trained run shaped like one of ``Store.records()``."""
    d = result.to_dict()
    import torch

    from beyondbp import __version__

    return {
        "id": planned.id, "status": "done" if result.status == "ok" else "diverged", "label": planned.label,
        "axes": dict(planned.axes), "config": planned.config.model_dump(), "result": d, "error": None,
        "attempts": 1, "host": socket.gethostname(),
        "versions": {"beyondbp": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "wall_time": result.total_time, "n_params": result.n_params, "flops_per_step": result.flops_per_step,
        "flops_total": result.flops_per_step * result.steps, "eval_flops": d.get("eval_flops"),
        "seed": planned.config.seed, "diverged_at_step": result.diverged_at_step, "started_at": 0.0,
        "finished_at": result.total_time,
    }  # fmt: skip


def test_tiny_real_study(spec, tmp_path):
    from beyondbp.training import run

    planned = spec.runs()
    assert len(planned) == 16
    records = [as_record(p, run(p.config)) for p in planned]
    analysis = judge_study(records, n_bootstrap=10)
    assert analysis.counts == {"done": 16}
    assert analysis.notes[0].startswith("the study has a single learning rate")
    assert {row.best_lr for row in analysis.best_lr} == {0.01}
    assert all(r.D == r_steps * 32 for r, r_steps in zip(analysis.runs, [p.config.steps for p in planned]))
    verdict = analysis.verdicts["dfa"]
    assert verdict.sentence.startswith("dfa vs backprop: ") and "few seeds" in verdict.sentence
    ll = analysis.fits["dfa"].loss_law
    assert not ll.fitted and "too few distinct (N, D) points" in ll.reason
    paths = write_report(spec, records, tmp_path / "report", analysis=analysis)
    assert {"frontier.png", "curves.png", "alignment.png"} <= set(paths)
    text = paths["report.html"].read_text()
    assert analysis.verdicts["dfa"].sentence.replace("'", "&#x27;") in text
    json.loads(paths["report.json"].read_text())


def test_an_estimate_is_inside_its_printed_interval_or_marked_apart(written):
    """Issue 21 §5: "1.7e-10 (4.2e-11 – 1.5e-10)" — the fit to all points printed beside a
    bootstrap interval that does not hold it, with nothing to say so."""
    def p(value, name):
        est, lo, hi = (value[name][k] for k in ("estimate", "low", "high"))
        fit = SimpleNamespace(**{name: math.nan if est is None else est})
        return report_mod._param(Intervals(fit, 0.95, 10, 0, {name: lo}, {name: hi}, {}), name)

    assert p({"A": {"estimate": 1.7e-10, "low": 4.2e-11, "high": 1.5e-10}}, "A") == "1.7e-10† (4.2e-11 – 1.5e-10)"
    # inside, but the short form would round it past a bound: printed with the digits it takes
    text = p({"B": {"estimate": 103.549, "low": 68.17, "high": 103.5491}}, "B")
    est, lo, hi = (float(t) for t in text.replace("(", "").replace(")", "").replace("–", "").split())
    assert "†" not in text and lo <= est <= hi
    text = p({"A": {"estimate": 1.26e10, "low": 1.1e9, "high": 1.2549e10}}, "A")  # 1.3e10 (1.1e9 – 1.3e10) before
    assert "†" in text
    text = p({"A": {"estimate": 1.2549e10, "low": 1.1e9, "high": 1.2551e10}}, "A")
    est, lo, hi = (float(t) for t in text.replace("(", "").replace(")", "").replace("–", "").split())
    assert "†" not in text and lo <= est <= hi
    assert p({"E": {"estimate": None, "low": 1, "high": 2}}, "E") == "— (1 – 2)"
    # in the written report: every parameter cell reads inside its interval, or carries the mark and its note
    out = written[0]
    md = (out / "report.md").read_text()
    section = md.split("## Fitted parameters")[1].split("\n## ")[0]
    cells = [c.strip() for line in section.splitlines() if line.startswith("|") for c in line.split("|") if " – " in c and "%" not in c]
    assert cells
    for cell in cells:
        est, rest = cell.split(" (", 1)
        lo, hi = (float(t) for t in rest.rstrip(")").split(" – "))
        assert est.endswith("†") or lo <= float(est) <= hi, cell
    if any("†" in c for c in cells):
        assert "† The fit to all points lies outside its own bootstrap interval" in section
