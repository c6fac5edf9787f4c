"""Generate the analyst guide's figures from a published release: answer tables and charts.

Usage (after `make demo`; `make guide` and `make guide-check` run these):

    .venv/bin/python docs/img/make_charts.py --config demo/demo.toml           # rewrite
    .venv/bin/python docs/img/make_charts.py --config demo/demo.toml --check   # compare only

docs/analyst-guide.md holds its generated text between markers: `<!-- answer: NAME -->` ...
`<!-- /answer -->` for each named question it works through (the question's table
definition, its commands, its answer as a Markdown table, its chart and one sentence of its
figures) and `<!-- figure: NAME -->` ... `<!-- /figure -->` for the other figures (which demo
they come from, the policy's perturbation, a table-builder example as the terminal shows it).
Every table is built exactly as the service builds it (`uprnlink.publish.access.build_table`
with the release's categories and the policy's `[tables]`: every count and sum perturbed),
so the guide shows what an analyst gets. Charts go to docs/img/NAME.png (Altair, written by
vl-convert: no browser; `--svg` for SVG). Withheld values are `[c]` in tables and dashed
empty bars labelled "withheld" in charts, never zero.

`--check` rewrites nothing. It says "analyst guide: figures match this demo" (exit 0), or
which block differs and to run `make guide` (exit 1), or that the guide's figures come from
another demo (exit 3): other people or seed, or other demo keys. The keys matter: the
linkage and every perturbed cell depend on them. `uprnlink demo --seed N` makes its keys from
the seed, so the same demo gives the same figures on every checkout; keys made any other way
(an older checkout's) give answers that differ by a few.

Needs the `dev` extra (altair, vl-convert-python).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

import altair as alt
import polars as pl

from uprnlink.publish.access import AnalystDatabase, build_table, table_categories
from uprnlink.publish.outputs import format_table
from uprnlink.publish.queries import NamedQuery, get_query, list_queries
from uprnlink.publish.tabulation import TablePolicy, TableSpec, read_table_policy
from uprnlink.settings import PROJECT_ROOT, read_settings

WIDTH, HEIGHT = 700, 300
COLOURS = ["#1d70b8", "#f47738", "#00703c", "#912b88", "#505a5f"]
FONT = "Liberation Sans, Helvetica, Arial, sans-serif"
WITHHELD_SHARE = 0.15  # a withheld bar's height, as a share of the largest value shown
WITHHELD = "[c]"

GUIDE = PROJECT_ROOT / "docs" / "analyst-guide.md"
IMAGES = PROJECT_ROOT / "docs" / "img"
BLOCK_RE = re.compile(r"<!-- (answer|figure): ([a-z0-9_]+) -->\n(.*?)<!-- /\1 -->", re.S)
DEMO_META_RE = re.compile(r"<!-- demo: (.*?) -->")

# The table-builder example shown with its output as the terminal prints it.
TABLE_EXAMPLE = "uprnlink table households --by tenure --totals"


# ------------------------------------------------------------------------------ charts


def _label(value: Any) -> str:
    return "unknown" if value is None else str(value).replace("_", " ")


def _wrap(text: str, width: int = 13) -> str:
    """A category label on at most two lines (split at "\\n" by the axis)."""
    if len(text) <= width or " " not in text:
        return text
    words = text.split()
    best = min(
        range(1, len(words)),
        key=lambda i: abs(len(" ".join(words[:i])) - len(" ".join(words[i:]))),
    )
    return " ".join(words[:best]) + "\n" + " ".join(words[best:])


def _x_axis(x: str, order: list[str]) -> alt.X:
    return alt.X(
        "x:N",
        sort=order,
        title=x.replace("_", " "),
        axis=alt.Axis(labelAngle=0, labelExpr="split(datum.label, '\\n')", labelFontSize=11),
    )


Chart = alt.LayerChart | alt.FacetChart


def _finish(chart: Chart, title: str) -> Chart:
    """Title, size and the guide's look (white, no frame, legend below)."""
    finished: Chart = (
        chart.properties(title=title, width=WIDTH, height=HEIGHT)
        .configure(font=FONT, background="white", padding=16)
        .configure_title(fontSize=17, anchor="start", offset=16)
        .configure_axis(labelColor="#505a5f", titleColor="#505a5f", titleFontWeight="normal")
        .configure_view(stroke=None)
        .configure_legend(orient="bottom", title=None, labelFontSize=12, symbolType="square")
    )
    return finished


def bars_chart(frame: pl.DataFrame, x: str, series: str | None, value: str, title: str) -> Chart:
    """Grouped vertical bars; a withheld value is a dashed empty bar labelled 'withheld'."""
    shown = [v for v in frame[value].to_list() if v is not None]
    stub = WITHHELD_SHARE * (max(shown) if shown else 1.0)
    rows = [
        {
            "x": _wrap(_label(r[x])),
            "series": _label(r[series]) if series else "",
            "value": r[value],
            "stub": stub,
        }
        for r in frame.iter_rows(named=True)
    ]
    order = list(dict.fromkeys(row["x"] for row in rows))
    groups = list(dict.fromkeys(row["series"] for row in rows))
    encoding: dict[str, Any] = {
        "x": _x_axis(x, order),
        "color": alt.Color(
            "series:N",
            sort=groups,
            scale=alt.Scale(domain=groups, range=COLOURS[: len(groups)]),
            legend=alt.Legend() if series else None,
        ),
    }
    if series:
        encoding["xOffset"] = alt.XOffset(
            "series:N", sort=groups, scale=alt.Scale(paddingInner=0.1)
        )
    y = alt.Y("value:Q", title=value.replace("_", " "), axis=alt.Axis(tickCount=5, grid=True))
    known = alt.Chart().transform_filter("datum.value != null").encode(y=y, **encoding)
    withheld = alt.Chart().transform_filter("datum.value == null").encode(**encoding)
    narrow: dict[str, Any] = (
        {} if series else {"width": 56}
    )  # one bar per category need not fill it
    chart = alt.layer(
        known.mark_bar(**narrow),
        known.mark_text(baseline="bottom", dy=-3, fontSize=10).encode(
            text=alt.Text("value:Q", format="~g"), color=alt.value("black")
        ),
        withheld.mark_bar(filled=False, strokeDash=[3, 3], **narrow).encode(y=alt.Y("stub:Q")),
        withheld.mark_text(angle=270, fontSize=9)
        .transform_calculate(middle="datum.stub / 2")
        .encode(y=alt.Y("middle:Q"), text=alt.value("withheld"), color=alt.value("#505a5f")),
        data=alt.InlineData(values=rows),
    )
    return _finish(chart, title)


def line_chart(frame: pl.DataFrame, x: str, value: str, title: str) -> Chart:
    """One line over ordered x values (dates), points labelled; withheld points are skipped."""
    rows = [{"x": _label(r[x]), "value": r[value]} for r in frame.iter_rows(named=True)]
    base = (
        alt.Chart()
        .transform_filter("datum.value != null")
        .encode(
            x=_x_axis(x, [row["x"] for row in rows]),
            y=alt.Y("value:Q", title=value.replace("_", " "), scale=alt.Scale(zero=True)),
        )
    )
    chart = alt.layer(
        base.mark_line(color=COLOURS[0], strokeWidth=2, point=alt.OverlayMarkDef(size=60)),
        base.mark_text(dy=-12, fontSize=11, color="black").encode(
            text=alt.Text("value:Q", format="~g")
        ),
        data=alt.InlineData(values=rows),
    )
    return _finish(chart, title)


def chart_for(
    query: NamedQuery, frame: pl.DataFrame, reference_date: date | None = None
) -> Chart | None:
    """The chart a question's `[chart]` asks for (None without one). With the release's
    reference date, years before it are drawn as dates, oldest first."""
    c = query.chart
    if c is None:
        return None
    if c.kind == "bars":
        return bars_chart(frame, c.x, c.series, c.y, query.title)
    x = c.x
    if x == "years_before_reference" and reference_date is not None:
        frame = frame.with_columns(
            pl.col(x)
            .map_elements(lambda y: str(_years_before(reference_date, int(y))), pl.String)
            .alias("date")
        ).sort(pl.col(x).cast(pl.Int64), descending=True)
        x = "date"
    return line_chart(frame, x, c.y, query.title)


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


# ------------------------------------------------------------------------------ release


@dataclass
class Release:
    """A published release as the generator reads it: the analysts' database, the policy's
    `[tables]`, the release's categories and facts about the run and the demo behind it."""

    db: AnalystDatabase
    policy: TablePolicy
    known: dict[str, dict[str, list[str]]]
    run_info: dict[str, Any]
    demo: dict[str, Any] = field(default_factory=dict)
    """The synthetic population's manifest (people, seed), when the run is a demo."""

    @classmethod
    def open(cls, config: Path) -> Release:
        settings = read_settings(config)
        db = AnalystDatabase(settings.database_path)
        rows = db.run("SELECT key, value FROM run_info", max_rows=1000).frame
        info = {k: json.loads(v) for k, v in rows.iter_rows()}
        manifest = settings.landing_dir.parent / "truth" / "manifest.json"
        demo = json.loads(manifest.read_text(encoding="utf-8")) if manifest.exists() else {}
        return cls(db, read_table_policy(settings.policy_path), table_categories(db), info, demo)

    def close(self) -> None:
        self.db.close()

    @property
    def reference_date(self) -> date:
        return date.fromisoformat(str(self.run_info["reference_date"]))

    def table(self, spec: TableSpec) -> tuple[pl.DataFrame, tuple[str, ...]]:
        answer = build_table(self.db, spec, self.policy, self.known)
        return answer.frame, answer.withheld

    def answer(self, query: NamedQuery) -> pl.DataFrame:
        """A named question's protected answer under its own column names."""
        answer = build_table(self.db, query.spec, self.policy, self.known)
        return query.present(answer)[0]

    def meta(self) -> dict[str, str]:
        """What identifies the demo the figures come from (see `--check`)."""
        return {
            "people": str(self.demo.get("people", "?")),
            "seed": str(self.demo.get("seed", "?")),
            "keys": f"{self.run_info.get('key_id', '?')}/{self.run_info.get('release_key_id', '?')}",
        }


def answer(db: AnalystDatabase, query: NamedQuery, policy_path: Path) -> pl.DataFrame:
    """A named question's protected answer under its own column names."""
    known = table_categories(db)
    table = build_table(db, query.spec, read_table_policy(policy_path), known)
    return query.present(table)[0]


# ------------------------------------------------------------------------------ text


def fmt(value: Any) -> str:
    """A value as the guide shows it: `[c]` when withheld, thousands separated, decimals as
    the service rounded them."""
    if value is None:
        return WITHHELD
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(frame: pl.DataFrame) -> str:
    """The answer as a Markdown table; withheld values `[c]`, numbers right-aligned."""
    cols = frame.columns
    align = [" ---: " if frame.schema[c].is_numeric() else " --- " for c in cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(align) + "|"]
    for row in frame.iter_rows():
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines)


def table_command(spec: TableSpec) -> str:
    """The `uprnlink table` command that builds a spec (the same cells, the same values)."""
    parts = ["uprnlink", "table", spec.dataset]
    if spec.dimensions:
        parts += ["--by", ",".join(spec.dimensions)]
    for name, values in spec.filters:
        parts += ["--where", f"{name}={','.join(values)}"]
    for m in spec.measures:
        if m.kind != "count":
            parts += ["--measure", m.text]
    if spec.totals:
        parts.append("--totals")
    return " ".join(shlex.quote(p) for p in parts)


def _definition(name: str) -> str:
    """The question file's `[table]` and `[columns]` (what the table is), verbatim."""
    text = (resources.files("uprnlink.publish.queries") / f"{name}.toml").read_text("utf-8")
    start = text.index("[table]")
    end = text.find("[chart]", start)
    return text[start : end if end >= 0 else None].strip()


def _cell(frame: pl.DataFrame, column: str, **where: str) -> Any:
    rows = frame.filter(*(pl.col(k) == v for k, v in where.items()))
    return rows[column][0] if rows.height else None


def _pct(value: Any) -> str:
    return WITHHELD if value is None else f"{value}%"


def _extremes(frame: pl.DataFrame, value: str, label: str) -> tuple[str, str]:
    """The smallest and largest shown value with its label, as text."""
    shown = frame.filter(pl.col(value).is_not_null()).sort(value, maintain_order=True)
    if shown.height == 0:
        return WITHHELD, WITHHELD
    low, high = shown.row(0, named=True), shown.row(-1, named=True)
    return (
        f"{_pct(low[value])} ({_label(low[label])})",
        f"{_pct(high[value])} ({_label(high[label])})",
    )


def _admissions(frame: pl.DataFrame, release: Release) -> str:
    def rate(decile: str, tenure: str) -> str:
        value = _cell(frame, "emergency_admissions_per_1000", imd_decile=decile, tenure=tenure)
        residents = _cell(frame, "residents", imd_decile=decile, tenure=tenure)
        return f"{fmt(value)} (of {fmt(residents)} residents)"

    sr, other = "social_rented", "owner_or_private_or_unknown"
    return (
        "Emergency admissions per 1,000 residents: in decile 1 (most deprived) "
        f"{rate('1', sr)} among social renters and {rate('1', other)} among everyone else; "
        f"in decile 10 (least deprived) {rate('10', sr)} and {rate('10', other)}."
    )


def _asthma(frame: pl.DataFrame, release: Release) -> str:
    def part(flag: str) -> str:
        pct = _pct(_cell(frame, "asthma_pct", overcrowded=flag))
        children = fmt(_cell(frame, "children", overcrowded=flag))
        asthma = fmt(_cell(frame, "with_asthma", overcrowded=flag))
        return f"{pct} of {children} children ({asthma} with asthma)"

    return (
        f"In overcrowded social lets {part('yes')}; in social lets that are not overcrowded "
        f"{part('no')}."
    )


def _oldest(frame: pl.DataFrame, release: Release) -> str:
    def of(arrangement: str, column: str) -> Any:
        return _cell(frame, column, living_arrangement=arrangement)

    return (
        f"{fmt(of('living_alone', 'people_85_plus'))} people aged 85+ live alone and "
        f"{fmt(of('living_alone', 'without_social_care'))} of them "
        f"({_pct(of('living_alone', 'without_social_care_pct'))}) had no adult social care "
        "service in the service period; of those living with others "
        f"{_pct(of('living_with_others', 'without_social_care_pct'))}, and of those in care "
        f"homes and other communal establishments {_pct(of('communal_establishment', 'without_social_care_pct'))}."
    )


def _conditions(frame: pl.DataFrame, release: Release) -> str:
    private = frame.filter(
        ~pl.col("household_type").is_in(["communal_establishment", "unclassified"])
    )
    out = []
    for age, words in (("18-64", "adults aged 18-64"), ("65+", "people aged 65+")):
        low, high = _extremes(
            private.filter(pl.col("broad_age") == age), "with_ltc_pct", "household_type"
        )
        out.append(f"among {words} from {low} to {high}")
    communal = _cell(
        frame, "with_ltc_pct", household_type="communal_establishment", broad_age="65+"
    )
    return (
        "The share with a long-term condition across the private household types (leaving "
        "out unclassified) runs " + "; ".join(out) + f"; in communal establishments it is "
        f"{_pct(communal)} of people aged 65+."
    )


def _overcrowding(frame: pl.DataFrame, release: Release) -> str:
    low, high = _extremes(
        frame.with_columns(("decile " + pl.col("imd_decile")).alias("decile")),
        "overcrowded_pct",
        "decile",
    )
    hidden = frame.filter(pl.col("overcrowded_pct").is_null())["imd_decile"].to_list()
    listed = (
        "no decile"
        if not hidden
        else "decile " + hidden[0]
        if len(hidden) == 1
        else "deciles " + ", ".join(hidden[:-1]) + " and " + hidden[-1]
    )
    return (
        f"Where the share is shown it runs from {low} to {high} of social rented homes; it is "
        f"{WITHHELD} for {listed}."
    )


def _change(frame: pl.DataFrame, release: Release) -> str:
    years = sorted(frame["years_before_reference"].to_list(), key=int, reverse=True)
    first, last = years[0], years[-1]
    day = _years_before(release.reference_date, int(first))

    def trend(column: str) -> str:
        a = _cell(frame, column, years_before_reference=first)
        b = _cell(frame, column, years_before_reference=last)
        return f"{fmt(a)} to {fmt(b)}"

    return (
        f"From {day.isoformat()} to {release.reference_date.isoformat()}: households "
        f"{trend('households')}; one person aged 65+ living alone {trend('people_65_plus_living_alone')}; "
        f"multigenerational households {trend('multigenerational_households')}; emergency "
        f"admissions per 1,000 residents {trend('emergency_admissions_per_1000')}."
    )


SENTENCES: dict[str, Callable[[pl.DataFrame, Release], str]] = {
    "emergency_admissions_by_tenure_and_deprivation": _admissions,
    "childhood_asthma_by_overcrowding": _asthma,
    "people_85_plus_living_alone_without_social_care": _oldest,
    "long_term_conditions_by_household_type": _conditions,
    "overcrowding_by_deprivation": _overcrowding,
    "household_change_over_time": _change,
}
"""One sentence of each worked question's figures, for the guide's prose to point at."""


def answer_block(release: Release, query: NamedQuery, frame: pl.DataFrame) -> str:
    """A worked question's generated text: definition, commands, answer, chart, figures."""
    parts = [
        f"The table ([`{query.name}.toml`](../src/uprnlink/publish/queries/{query.name}.toml)):",
        "",
        "```toml",
        _definition(query.name),
        "```",
        "",
        "```bash",
        f"uprnlink query --named {query.name}",
        "# the same cells, under the table builder's column names:",
        table_command(query.spec),
        "```",
        "",
        "On the demo:",
        "",
        markdown_table(frame),
    ]
    if query.chart is not None:
        parts += ["", f"![{query.title}](img/{query.name}.png)"]
    sentence = SENTENCES.get(query.name)
    if sentence is not None:
        parts += ["", "In figures: " + sentence(frame, release)]
    return "\n".join(parts) + "\n"


def _long_date(day: date) -> str:
    return f"{day.day} {day:%B %Y}"


def demo_block(release: Release) -> str:
    counts = release.run_info.get("counts", {})
    meta = " ".join(f"{k}={v}" for k, v in release.meta().items())
    people, seed = release.demo.get("people"), release.demo.get("seed")
    source = (
        f"`make demo`'s live release (a synthetic population, `--people {people} --seed {seed}`)"
        if people
        else "a published release"
    )
    return (
        f"<!-- demo: {meta} -->\n"
        f"The answers in this guide are from {source}: {fmt(counts.get('people'))} people "
        f"linked over the extracts' years, and {fmt(counts.get('households'))} private "
        f"households and {fmt(counts.get('communal_establishments'))} communal "
        f"establishments on {_long_date(release.reference_date)}.\n"
    )


def protection_block(release: Release) -> str:
    p = release.policy.perturbation
    low, high = p.magnitude_noise
    small = (
        (
            f", never becoming 1 to {p.no_small_values}"
            if p.no_small_values > 2
            else ", never becoming 1 or 2"
            if p.no_small_values == 2
            else ", never becoming 1"
        )
        if p.no_small_values
        else ""
    )
    return (
        f"In this partnership's policy (`[tables]` in `governance/policy.toml`) a count moves "
        f"by at most {p.max_noise} either way{small}, and is withheld as `[c]` when it is "
        f"below {p.threshold} after that; a sum moves by between {low:g} and {high:g} times "
        f"its largest single contribution, up or down, plus up to {p.max_noise} like a count. "
        "So a percentage out of 400 people can "
        f"be out by up to about {100 * p.max_noise / 400:.1f} points from its numerator's "
        f"noise alone, and one out of 40 people by up to about {100 * p.max_noise / 40:.0f}.\n"
    )


def limits_block(release: Release) -> str:
    limits = release.policy.limits
    return (
        f"A table may cross up to {limits.max_dimensions} dimensions, have up to "
        f"{limits.max_cells:,} cells and hold up to {limits.max_measures} measures (`[tables]` "
        "in the policy; `uprnlink catalogue --json` shows them as `limits`).\n"
    )


def example_block(release: Release) -> str:
    """`TABLE_EXAMPLE` as the terminal shows it, and whether its rows add up to its total."""
    from uprnlink.cli import build_parser
    from uprnlink.service.client_cli import _spec_from_args

    args = build_parser().parse_args(shlex.split(TABLE_EXAMPLE)[1:])
    spec = TableSpec.from_dict(_spec_from_args(args))
    frame, withheld = release.table(spec)
    text = format_table(frame, withheld)
    parts = frame.filter(pl.col("tenure") != "Total")["count"].to_list()
    total = _cell(frame, "count", tenure="Total")
    if None in parts or total is None:
        sums = "Here a cell is withheld, so nothing can be added up."
    else:
        added = sum(parts)
        verdict = (
            "which happens to be the total shown"
            if added == total
            else f"but the total shows {fmt(total)}"
        )
        sums = f"Here {' + '.join(fmt(v) for v in parts)} = {fmt(added)}, {verdict}."
    return f"```text\n$ {TABLE_EXAMPLE}\n{text}\n```\n\n{sums}\n"


FIGURES: dict[str, Callable[[Release], str]] = {
    "demo": demo_block,
    "protection": protection_block,
    "limits": limits_block,
    "table_example": example_block,
}


# ------------------------------------------------------------------------------ the guide


def guide_blocks(text: str) -> dict[tuple[str, str], str]:
    """The generated blocks a guide holds: (kind, name) -> text."""
    found: dict[tuple[str, str], str] = {}
    for m in BLOCK_RE.finditer(text):
        key = (m.group(1), m.group(2))
        if key in found:
            raise ValueError(f"the guide has two blocks {key[0]}: {key[1]}")
        found[key] = m.group(3)
    return found


def generate(
    release: Release, text: str
) -> tuple[dict[tuple[str, str], str], dict[str, pl.DataFrame]]:
    """Every block the guide asks for, from this release, and each answer's frame."""
    blocks: dict[tuple[str, str], str] = {}
    frames: dict[str, pl.DataFrame] = {}
    for kind, name in guide_blocks(text):
        if kind == "figure":
            if name not in FIGURES:
                raise ValueError(f"no figure {name!r}: the generator makes {sorted(FIGURES)}")
            blocks[(kind, name)] = FIGURES[name](release)
        else:
            query = get_query(name)
            frames[name] = release.answer(query)
            blocks[(kind, name)] = answer_block(release, query, frames[name])
    return blocks, frames


def rewrite(text: str, blocks: dict[tuple[str, str], str]) -> str:
    """The guide with each block's text replaced by the generated one."""

    def put(m: re.Match[str]) -> str:
        kind, name = m.group(1), m.group(2)
        return f"<!-- {kind}: {name} -->\n{blocks[(kind, name)]}<!-- /{kind} -->"

    return BLOCK_RE.sub(put, text)


@dataclass(frozen=True)
class CheckResult:
    status: str  # "match", "differs" or "other-demo"
    message: str

    @property
    def exit_code(self) -> int:
        return {"match": 0, "differs": 1}.get(self.status, 3)


def _meta_of(block: str) -> dict[str, str]:
    m = DEMO_META_RE.search(block)
    if m is None:
        return {}
    return dict(item.split("=", 1) for item in m.group(1).split() if "=" in item)


def check(text: str, blocks: dict[tuple[str, str], str], release: Release) -> CheckResult:
    """Whether the guide's blocks are this release's (see the module's docstring)."""
    held = guide_blocks(text)
    theirs = _meta_of(held.get(("figure", "demo"), ""))
    ours = release.meta()
    if theirs and (theirs.get("people"), theirs.get("seed")) != (ours["people"], ours["seed"]):
        return CheckResult(
            "other-demo",
            f"analyst guide: not checked: its figures are from a demo of {theirs.get('people')} "
            f"people (seed {theirs.get('seed')}), this one has {ours['people']} (seed "
            f"{ours['seed']})",
        )
    if theirs and theirs.get("keys") != ours["keys"]:
        return CheckResult(
            "other-demo",
            "analyst guide: its figures are from a demo with other keys "
            f"({theirs.get('keys')}; this demo's are {ours['keys']}). The linkage and every "
            "perturbed cell depend on the keys, so this demo's answers differ from the guide's "
            "by a few (a demo made with `uprnlink demo --seed` has the guide's keys: delete "
            "demo/work/keys and run `make demo` again). "
            "`make guide` rewrites the guide from this demo (commit that only if you mean "
            "to replace the guide's figures).",
        )
    differing = []
    for key, body in blocks.items():
        if held.get(key) != body:
            old = (held.get(key) or "").splitlines()
            new = body.splitlines()
            line = next(
                (i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b),
                min(len(old), len(new)),
            )
            guide_line = old[line] if line < len(old) else "(nothing)"
            demo_line = new[line] if line < len(new) else "(nothing)"
            differing.append(
                f"  {key[0]}: {key[1]}, line {line + 1}:\n    guide: {guide_line}\n"
                f"    demo:  {demo_line}"
            )
    if differing:
        return CheckResult(
            "differs",
            "analyst guide: figures differ from this demo; run `make guide` to rewrite them:\n"
            + "\n".join(differing),
        )
    return CheckResult("match", "analyst guide: figures match this demo")


def write_charts(
    release: Release, frames: dict[str, pl.DataFrame], out: Path, *, svg: bool = False
) -> list[Path]:
    """Each worked question's chart, drawn from its answer."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in frames.items():
        chart = chart_for(get_query(name), frame, release.reference_date)
        if chart is None:
            continue
        path = out / f"{name}.{'svg' if svg else 'png'}"
        chart.save(path)  # through vl-convert: no browser
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="run configuration of the published run")
    p.add_argument("--guide", default=str(GUIDE), help="the guide to rewrite or check")
    p.add_argument("--out", default=str(IMAGES), help="folder for the charts")
    p.add_argument("--svg", action="store_true", help="write SVG instead of PNG")
    p.add_argument("--check", action="store_true", help="compare only; rewrite nothing")
    p.add_argument("--print", action="store_true", help="print every answer table and exit")
    args = p.parse_args(argv)
    guide = Path(args.guide)
    text = guide.read_text(encoding="utf-8")
    release = Release.open(Path(args.config))
    try:
        if args.print:
            for query in list_queries():
                print(f"### {query.name}\n\n{markdown_table(release.answer(query))}\n")
            return 0
        blocks, frames = generate(release, text)
        if args.check:
            result = check(text, blocks, release)
            missing = [
                f"{Path(args.out) / name}.png"
                for name in frames
                if get_query(name).chart
                if not (Path(args.out) / f"{name}.png").exists()
            ]
            if result.status == "match" and missing:
                result = CheckResult(
                    "differs",
                    f"analyst guide: charts missing ({', '.join(missing)}): run `make guide`",
                )
            print(result.message)
            return result.exit_code
        new = rewrite(text, blocks)
        if new != text:
            guide.write_text(new, encoding="utf-8")
        changed = sum(guide_blocks(text).get(k) != v for k, v in blocks.items())
        print(f"{guide}: {len(blocks)} generated blocks, {changed} changed")
        for path in write_charts(release, frames, Path(args.out), svg=args.svg):
            print(f"wrote {path}")
        return 0
    finally:
        release.close()


if __name__ == "__main__":
    sys.exit(main())
