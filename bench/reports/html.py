"""Build the self-contained HTML report: findings first, then the details, rendered from jinja2 templates."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pandas as pd

from bench.compare.regression import DEFAULT_ALPHA
from bench.compare.thresholds import Threshold
from bench.errors import BenchError
from bench.predict.present import Advised
from bench.reports import advice, charts, detail, headline, network, seeds, summary
from bench.reports.blocks import Omitted, Page, Section
from bench.reports.cases import ReportData
from bench.storage.parquet import read_comm, read_results
from bench.system import now_utc


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a section builder may read."""

    data: ReportData
    trials: pd.DataFrame  # the latest rows, with labels and baseline ratios (detail.prepared)
    thresholds: Sequence[Threshold]
    alpha: float
    advised: Advised | None = None  # a cluster to advise on (commbench report --advise)


@dataclass(frozen=True, slots=True)
class SectionSpec:
    """A section in page order: its id, its title, its builder, and why it is absent when it has nothing to show."""

    id: str
    title: str
    build: Callable[[Context], Section | None]
    absent: str


SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("findings", "Findings", lambda c: headline.section(c.data, c.thresholds, c.alpha), ""),
    SectionSpec("seeds", "Accuracy over seeds", lambda c: seeds.section(c.data), "no case ran with more than one seed"),
    SectionSpec("summary", "Run summary", lambda c: summary.section(c.data), ""),
    SectionSpec("trials", "Every trial", lambda c: detail.trials_section(c.trials), ""),
    SectionSpec("vs-baseline", "Bytes, latency and memory against the baseline", lambda c: charts.baseline_section(c.data),
                "no case has a baseline and another strategy that differ"),  # fmt: skip
    SectionSpec("accuracy", "Accuracy against bytes", lambda c: charts.accuracy_section(c.data),
                "no case has two strategies with an accuracy that cost different bytes"),  # fmt: skip
    SectionSpec("scaling", "Scaling with world size", lambda c: charts.scaling_section(c.data),
                "no strategy ran at two or more world sizes"),  # fmt: skip
    SectionSpec("network", "Step time against link bandwidth", lambda c: network.section(c.data.rows, c.data.comm),
                "no case has a baseline measured on two or more shaped links (network axis)"),  # fmt: skip
    SectionSpec(advice.SECTION_ID, advice.TITLE, lambda c: advice.section(c.advised) if c.advised else None,
                "no cluster was given (commbench report RESULTS --advise advise.toml)"),  # fmt: skip
    SectionSpec("bytes", "Measured vs analytic bytes", lambda c: detail.bytes_section(c.trials, c.data),
                "no trial moved bytes"),  # fmt: skip
    SectionSpec("collectives", "Per collective (rank 0)", lambda c: detail.collectives_section(c.trials, c.data),
                "no collectives were recorded"),  # fmt: skip
    SectionSpec("problems", "Failed and skipped trials", lambda c: summary.problems(c.data),
                "the latest row of every trial is ok; earlier failed rows are in the run summary"),  # fmt: skip
    SectionSpec("history", "History across runs", lambda c: charts.history_section(c.data, c.thresholds),
                "no trial was measured in two or more runs"),  # fmt: skip
)
SECTION_IDS = tuple(s.id for s in SECTIONS)


def build_page(
    df: pd.DataFrame,
    comm: pd.DataFrame,
    title: str,
    thresholds: Sequence[Threshold] = (),
    alpha: float = DEFAULT_ALPHA,
    advised: Advised | None = None,
) -> Page:
    """Every section that has something to show, in order, and a line for each that has not."""
    if not 0.0 < alpha < 1.0:
        raise BenchError(f"alpha must be in (0, 1), got {alpha}")
    stamp = now_utc().strftime("%Y-%m-%d %H:%M UTC")
    data = ReportData.of(df, comm)
    if df.empty:
        if advised:
            return Page(title, stamp, "No results given: every number below is predicted, nothing was measured.", (advice.section(advised),))
        return Page(title, stamp, summary.headline(data), ())
    ctx = Context(data, detail.prepared(data), thresholds, alpha, advised)
    sections, omitted = [], []
    for spec in SECTIONS:
        built = spec.build(ctx)
        if built is None:
            omitted.append(Omitted(spec.title, spec.absent))
        else:
            sections.append(built)
    return Page(title, stamp, summary.headline(data), tuple(sections), tuple(omitted))


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("bench.reports", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(page: Page) -> str:
    return _ENV.get_template("report.html.j2").render(page=page)


def write_report(
    paths: list[Path],
    out: Path,
    title: str | None = None,
    thresholds: Sequence[Threshold] = (),
    alpha: float = DEFAULT_ALPHA,
    advised: Advised | None = None,
) -> Path:
    """The report of the rows under `paths` (none: a page of the advice alone) written to `out`."""
    df, comm = read_results(paths), read_comm(paths)  # no paths: empty tables with the schema's columns
    suites = sorted(df["suite"].astype(str).unique()) if not df.empty else []
    default = f"commbench: {', '.join(suites)}" if suites else f"commbench advise: {advised.request.model}" if advised else "commbench: empty"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(build_page(df, comm, title or default, thresholds, alpha, advised)))
    return out
