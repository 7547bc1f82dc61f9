"""The HTML report on stored result fixtures: findings against the right baseline, sections, values, a real browser."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.predict.present import advised
from bench.predict.request import AdviseRequest
from bench.reports import charts, detail
from bench.reports.blocks import Table
from bench.reports.cases import ReportData
from bench.reports.headline import StrategyFinding, findings
from bench.reports.html import SECTION_IDS, build_page, render, write_report
from bench.reports.plots import pareto_front
from bench.storage.parquet import read_comm, read_results
from tests.unit.report_fixtures import GRAD_BYTES, T0, Run, train_bytes, trial, write_sample


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(tmp_path_factory.mktemp("results"))


ADVISE = AdviseRequest(model="llama-7b", nodes=8, gpus_per_node=8, link="100gbit", mem="80GB")


@pytest.fixture(scope="module")
def sample_report(sample: Path) -> Path:
    """The sample rows' report with the advice section for an 8 x 8 cluster, so every section is there."""
    return write_report([sample], sample.parent / "report" / "index.html", advised=advised(ADVISE, [sample]))


def data_of(*runs: Run, root: Path) -> ReportData:
    for run in runs:
        run.write(root)
    return ReportData.of(read_results([root]), read_comm([root]))


def run_at(i: int, suite: str = "s", sha: str | None = None) -> Run:
    return Run(suite, f"run{i}", sha or f"{i:x}" * 40, T0 + pd.Timedelta(hours=i))


def only(found: list[StrategyFinding], strategy: str, variant: str = "") -> StrategyFinding:
    hits = [f for f in found if f.strategy == strategy and variant in f.variant]
    assert len(hits) == 1, [(f.strategy, f.variant) for f in found]
    return hits[0]


def all_findings(data: ReportData) -> list[StrategyFinding]:
    tables, _ = findings(data)
    return [f for t in tables for f in t.rows]


# --- findings: the right baseline ------------------------------------------------------------------


def test_a_strategy_is_paired_with_the_baseline_of_its_own_options(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    run = run_at(0)
    sgd = {"optimizer": "sgd", "momentum": 0.9}
    train_bytes(trial(run, "baseline", rng=rng, latency_s=0.10), run, GRAD_BYTES)
    train_bytes(trial(run, "baseline", rng=rng, latency_s=0.20, options=sgd), run, GRAD_BYTES)
    train_bytes(trial(run, "fp16_compress", rng=rng, latency_s=0.19, options=sgd), run, GRAD_BYTES / 2)
    train_bytes(trial(run, "fp16_compress", rng=rng, latency_s=0.07), run, GRAD_BYTES / 2)
    found = all_findings(data_of(run, root=tmp_path))
    sgd_row = only(found, "fp16_compress", "optimizer=sgd")
    adamw_row = next(f for f in found if f.strategy == "fp16_compress" and f.variant == "")  # sets no options
    # Paired with the adamw baseline, the sgd row would read 1.9x; the adamw row 0.35x.
    assert sgd_row.latency.ratio == pytest.approx(0.95, rel=0.05) and sgd_row.latency.base == pytest.approx(0.20, rel=0.05)
    assert adamw_row.latency.ratio == pytest.approx(0.70, rel=0.05) and adamw_row.latency.base == pytest.approx(0.10, rel=0.05)
    assert sgd_row.bytes.ratio == pytest.approx(0.5) and adamw_row.bytes.ratio == pytest.approx(0.5)


def test_rows_of_different_runs_are_never_paired(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    first, second, third = run_at(0), run_at(1), run_at(2)
    trial(first, "baseline", rng=rng, latency_s=0.10)
    trial(first, "fp16_compress", rng=rng, latency_s=0.08)
    trial(second, "baseline", rng=rng, latency_s=0.30)  # a later, slower launch of the same trial
    trial(third, "topk", rng=rng, latency_s=0.12)  # a run without a baseline
    data = data_of(first, second, third, root=tmp_path)
    found = all_findings(data)
    fp16, topk = only(found, "fp16_compress"), only(found, "topk")
    assert fp16.run_id == "run0" and fp16.latency.base == pytest.approx(0.10, rel=0.05)  # not run1's 0.30
    assert fp16.latency.ratio == pytest.approx(0.8, rel=0.05)
    assert topk.latency.ratio is None and topk.bytes.ratio is None and topk.verdict == "no baseline"
    assert "run2" in topk.note
    # The detail tables pair the same way: no ratio for a row whose run has no baseline.
    trials = detail.prepared(data).set_index("strategy")
    assert np.isnan(trials.loc["topk", "latency_p50_s_ratio"])
    assert trials.loc["fp16_compress", "latency_p50_s_ratio"] == pytest.approx(0.8, rel=0.05)


def test_verdicts_come_from_the_cis_over_launches(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    run = run_at(0)
    trial(run, "baseline", rng=rng, latency_s=0.100)
    trial(run, "fp16_compress", rng=rng, latency_s=0.070)  # 30% faster, 3% noise
    trial(run, "topk", rng=rng, latency_s=0.130)
    trial(run, "signsgd", rng=rng, latency_s=0.101)  # 1%: inside the 10% threshold
    found = all_findings(data_of(run, root=tmp_path))
    assert only(found, "fp16_compress").verdict == "better" and only(found, "fp16_compress").p_value is None
    assert only(found, "topk").verdict == "worse"
    assert only(found, "signsgd").verdict == "within noise"
    assert [f.strategy for f in found] == ["fp16_compress", "signsgd", "topk"]  # ranked, fastest first


def test_groups_of_baselines_only_get_a_line_not_a_table(sample: Path) -> None:
    data = ReportData.of(read_results([sample]), read_comm([sample]))
    tables, baseline_only = findings(data)
    assert ("none", "collectives") not in {(t.model, t.workload) for t in tables}
    assert any(line.startswith("none × collectives: 4 baseline row(s)") and "options.op" in line for line in baseline_only)


# --- the sample report: sections, values, self-containment ---------------------------------------


def test_sample_report_has_every_section_in_order(sample_report: Path) -> None:
    text = sample_report.read_text()
    found = re.findall(r"<section id=\"([a-z-]+)\">", text)
    assert found == list(SECTION_IDS)
    assert "Not shown" not in text
    assert text.index('id="findings"') < text.index('id="summary"')  # the answer comes first


def test_report_is_self_contained_and_escaped(sample_report: Path) -> None:
    text = sample_report.read_text()
    srcs = re.findall(r'<img [^>]*src="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(src|href)="(https?:)?//', text) and "<link" not in text and "@import" not in text
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # autoescaped error text


def test_summary_states_counts_in_words_and_every_runs_commit(sample_report: Path) -> None:
    text = sample_report.read_text()
    assert "45 ok, 1 failed, 1 skipped" in text and '{"ok"' not in text
    summary = text[text.index('id="summary"') : text.index('id="trials"')]
    for sha in ("1111111111", "0000000000", "0707070707"):  # every run's commit, not the first row's
        assert f"<td class=\"l\">{sha}</td>" in summary
    assert "nan" not in summary.lower().replace("transformers", "")
    assert "<td class=\"l\">GPU</td><td class=\"l\">none</td>" in summary


def test_history_marks_the_regression_at_its_commit(sample_report: Path) -> None:
    text = sample_report.read_text()
    hist = text[text.index('id="history"') :]
    assert "REGRESSION" in hist and "0404040404" in hist and "fp16_compress bert-tiny train cpu x2" in hist
    assert hist.count("REGRESSION") == 1  # the baseline's noise is no step


def test_failed_and_skipped_trials_with_their_reasons(sample_report: Path) -> None:
    text = sample_report.read_text()
    problems = text[text.index('id="problems"') : text.index('id="history"')]
    assert "gloo connection reset" in problems and "bf16_compress needs NCCL" in problems
    assert "[exception, rank 1, in window]" in problems  # the class, rank and phase of the failure
    assert "<details>" in problems  # the failure's traceback, collapsed


def test_tokens_per_second_is_a_dash_where_no_tokens_are_processed(sample: Path) -> None:
    data = ReportData.of(read_results([sample]), read_comm([sample]))
    shown = detail.prepared(data).groupby("workload")["tokens_shown"]
    assert shown.apply(lambda s: s.isna().all())["collectives"]  # stored as 0 tokens/s: shown as –
    assert shown.apply(lambda s: s.notna().all())["infer"]


def test_analytic_bytes_appear_once_per_op_and_never_on_a_row_without_bytes(sample: Path) -> None:
    data = ReportData.of(read_results([sample]), read_comm([sample]))
    section = detail.collectives_section(detail.prepared(data), data)
    assert section is not None
    t = next(b for b in section.blocks if isinstance(b, Table))
    heads = [c.head for c in t.columns]
    dtype, logical, analytic = heads.index("dtype"), heads.index("logical MB/step"), heads.index("analytic MB/step")
    zero_rows = [r for r in t.rows if r[dtype].text == "int64"]
    assert zero_rows and all(r[logical].text == "0.000" and r[analytic].text == "–" for r in zero_rows)
    assert all(r[analytic].text == r[logical].text for r in t.rows if r[dtype].text in ("float16",))


# --- sections present only with something to show -------------------------------------------------


def test_sections_without_content_are_left_out_with_the_reason(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    run = run_at(0)
    train_bytes(trial(run, "baseline", rng=rng, latency_s=0.10, eval_loss=5.1), run, GRAD_BYTES)
    train_bytes(trial(run, "fp16_compress", rng=rng, latency_s=0.08, eval_loss=5.1), run, GRAD_BYTES / 2)
    run.write(tmp_path)
    page = build_page(read_results([tmp_path]), read_comm([tmp_path]), "t")
    ids = [s.id for s in page.sections]
    assert ids == ["findings", "summary", "trials", "vs-baseline", "accuracy", "bytes", "collectives"]
    omitted = {"Accuracy over seeds", "Scaling with world size", "Failed and skipped trials", "History across runs",
               "Step time against link bandwidth", "Advice for a cluster (predicted)"}  # fmt: skip
    assert {o.title for o in page.omitted} == omitted
    html = render(page)
    assert "Not shown: Accuracy over seeds (no case ran with more than one seed);" in html
    assert " Scaling with world size (no strategy ran at two or more world sizes);" in html


def test_no_chart_carries_no_information(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    run = run_at(0)
    # Inference: no bytes at all; equal memory; only latency differs.
    trial(run, "baseline", "m", "infer", rng=rng, world_size=1, latency_s=0.10, comm_logical_bytes_per_step=0.0, perplexity=14.0)
    trial(run, "quant_int8_wo", "m", "infer", rng=rng, world_size=1, latency_s=0.15, comm_logical_bytes_per_step=0.0, perplexity=14.0)
    trial(run, "baseline", "m2", "infer", rng=rng, world_size=1, latency_s=0.10)  # a case with one bar
    data = data_of(run, root=tmp_path)
    section = charts.baseline_section(data)
    assert section is not None and [b.alt for b in section.blocks] == ["step latency: p50, whiskers p90 to p99"]
    assert charts.accuracy_section(data) is None  # equal bytes: accuracy against bytes has nothing to say


def test_pareto_front_treats_differences_inside_the_noise_as_ties() -> None:
    pts = [(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (4.0, 1.0), (2.0, 3.0)]
    assert pareto_front(pts) == [0, 1, 4, 3]  # (3, 4) is beaten by (2, 3); equal points do not beat each other
    near = [(6.0, 5.10002), (12.0, 5.10000)]  # fp16 vs fp32: 2e-5 nats apart
    assert pareto_front(near) == [0, 1]
    assert pareto_front(near, tol=5.1e-3) == [0]  # inside the noise: a tie, won by fewer bytes


# --- the CLI ---------------------------------------------------------------------------------------


def test_cli_report_takes_the_comparators_thresholds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(6)
    run = run_at(0)
    trial(run, "baseline", rng=rng, latency_s=0.10)
    trial(run, "fp16_compress", rng=rng, latency_s=0.08)
    run.write(tmp_path / "res")
    out = tmp_path / "r.html"
    assert main(["report", str(tmp_path / "res"), "--out", str(out)]) == 0
    assert ">better<" in out.read_text()
    assert main(["report", str(tmp_path / "res"), "--out", str(out), "--threshold", "latency_p50:30%"]) == 0
    assert ">within noise<" in out.read_text() and "more than 30%" in out.read_text()
    assert main(["report", str(tmp_path / "res"), "--threshold", "latency:x"]) == 2
    assert "commbench: error: threshold" in capsys.readouterr().err


# --- a real browser ----------------------------------------------------------------------------------

CHROMIUM = os.environ.get("COMMBENCH_CHROMIUM") or next(
    (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None
)
VIEWPORT = (1400, 2000)
# Appended to a copy of the report: once everything has loaded, write what a reader would see into the DOM.
CHECK = """<script>
window.addEventListener("load", function () {
  var vw = document.documentElement.clientWidth;
  var imgs = Array.prototype.slice.call(document.images);
  var tables = Array.prototype.slice.call(document.querySelectorAll("table"));
  var out = {
    viewport: vw, page_width: document.documentElement.scrollWidth, text: document.body.innerText.length,
    images: imgs.length, broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).map(function (i) { return i.alt; }),
    sections: Array.prototype.slice.call(document.querySelectorAll("section[id]")).map(function (s) { return s.id; }),
    tables: tables.length,
    // wider than the window, or than its section (where it would need a sideways scroll to be read)
    overflowing: tables.filter(function (t) {
      var right = t.getBoundingClientRect().right;
      return right > vw + 0.5 || right > t.parentElement.getBoundingClientRect().right + 0.5;
    })
      .map(function (t) { return (t.caption ? t.caption.textContent + ": " : "") + t.rows[0].textContent.slice(0, 80); })
  };
  var pre = document.createElement("pre"); pre.id = "browser-check"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
           f"--user-data-dir={profile}", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}", "--hide-scrollbars", *args, page.as_uri()]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def test_cli_report_adds_the_advice_section_for_a_cluster_file(sample: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "advise.toml"
    cfg.write_text('model = "llama-7b"\nnodes = 8\ngpus_per_node = 8\nlink = "100gbit"\nmem = "80GB"\n')
    out = tmp_path / "r.html"
    assert main(["report", str(sample), "--out", str(out), "--advise", str(cfg)]) == 0
    text = out.read_text()
    section = text[text.index('<section id="advise">') :]
    section = section[: section.index("</section>")]
    rows = re.findall(r"<tr[ >].*?</tr>", section, re.S)[1:]  # the header row first
    assert len(rows) == 9 and all(r.count("predicted") == 3 for r in rows)  # compute, comm and step
    # DDP keeps 16 B per parameter on every GPU: 108 GB for llama-7b, more than 80 GB, under all 5 DDP techniques.
    assert sum(">NO<" in r for r in rows) == 5
    by = {re.sub(r"<[^>]+>", "|", r).split("|")[4]: r for r in rows}  # technique -> its row
    assert "+0.005 nats eval loss" in by["topk(ratio=0.01)"] and "nats eval loss" in by["fp16_compress"]  # measured in the sample
    assert "not measured" in by["signsgd"] and "not measured" in by["fsdp"]
    assert 'id="findings"' in text  # the results' own report is all there too


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(sample_report: Path, tmp_path: Path) -> None:
    checked = tmp_path / "checked.html"
    checked.write_text(sample_report.read_text().replace("</body>", CHECK + "</body>"))
    dom = chromium(checked, tmp_path / "profile-dom", "--virtual-time-budget=15000", "--dump-dom").stdout
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', dom, re.S)
    assert found, "the check script did not run"
    seen = json.loads(html.unescape(found.group(1)))
    assert seen["viewport"] == VIEWPORT[0] and seen["text"] > 2000
    assert seen["images"] >= 8 and seen["broken"] == []  # every figure decoded (naturalWidth > 0)
    assert seen["sections"] == list(SECTION_IDS)
    assert seen["tables"] >= 10 and seen["overflowing"] == []  # no table wider than a 1400-px window or its section
    assert seen["page_width"] <= VIEWPORT[0]  # nothing else scrolls the page sideways

    shot = tmp_path / "shot.png"
    chromium(sample_report, tmp_path / "profile-shot", f"--screenshot={shot}")
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (VIEWPORT[1], VIEWPORT[0])
    ink = (pixels < 0.9).any(axis=2)  # not white: text, table rules, figures
    assert ink.mean() > 0.02, "the page looks blank"
    assert len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50  # text and colours, not one fill


def test_every_schema_format_is_a_formatter_and_real_columns_take_the_schemas_label() -> None:
    from bench.reports import fmt
    from bench.storage.schema import COMM_COLUMNS, TRIAL_COLUMNS

    assert all(callable(getattr(fmt, c.fmt, None)) for c in (*TRIAL_COLUMNS, *COMM_COLUMNS))
    labels = {c.name: c.heading for c in TRIAL_COLUMNS}
    specs = [s for group in detail.GROUPS.values() for s in group]
    assert [s.head for s in specs if s.column == "latency_p50_s"] == [labels["latency_p50_s"]] == ["p50 ms"]
    assert all(s.head == labels[s.column] for s in specs if s.column in labels)


def test_minor_log_ticks_are_labelled_only_at_2_3_and_5() -> None:
    from bench.reports.plots import minor_log_label

    assert [minor_log_label(v) for v in (0.2, 0.3, 0.5, 30.0, 0.09, 0.4, 0.9, 7.0)] == ["0.2", "0.3", "0.5", "30", "", "", "", ""]


def test_a_short_log_axis_carries_plain_minor_labels_and_a_long_one_none() -> None:
    import matplotlib.pyplot as plt

    from bench.reports.plots import _log_labels

    fig, ax = plt.subplots()
    ax.set_xscale("log")
    _log_labels(ax.xaxis, 25, 400)  # 1.2 decades: the 4-node panel, whose only major tick is 100
    assert ax.xaxis.get_minor_formatter()(30.0, 0) == "30" and ax.xaxis.get_major_formatter()(100.0, 0) == "100"
    _log_labels(ax.xaxis, 25, 10000)  # 2.6 decades: the majors are enough
    assert ax.xaxis.get_minor_formatter()(30.0, 0) == ""
    plt.close(fig)
