"""Draw the analyst guide's charts and print its answer tables from a published database.

Usage (after `make demo`, or any run):

    .venv/bin/python docs/img/make_charts.py --config config/demo.toml [--out docs/img]

For every named query with a `-- chart:` hint it runs the query exactly as
`uprnlink query --named` does (SQL, then disclosure control under governance/policy.toml),
writes the chart as SVG and, with a headless Chromium on the PATH (`chromium`), as PNG, and
prints the answer as a Markdown table to paste into docs/analyst-guide.md. No plotting library
is needed: the SVG is written here. Withheld (suppressed) values are drawn as an empty, dashed
bar labelled "withheld", never as zero.

Chart hints: `bars X SERIES VALUE` (grouped bars, one per SERIES value; `-` for one series) and
`line X - VALUE`.
"""

from __future__ import annotations

import argparse
import html
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from uprnlink.publish.access import run_query
from uprnlink.publish.database import read_policy
from uprnlink.publish.queries import NamedQuery, list_queries, protect_result
from uprnlink.settings import read_settings

WIDTH, HEIGHT = 820, 440
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 56, 96
COLOURS = ("#1d70b8", "#f47738", "#00703c", "#912b88", "#505a5f")
FONT = "font-family='Helvetica, Arial, sans-serif'"


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    step = float(10 ** (len(str(int(value))) - 1))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= m * step:
            return m * step
    return 10.0 * step


def _label(value: Any) -> str:
    return "unknown" if value is None else str(value).replace("_", " ")


def _wrap(text: str, width: int = 13) -> list[str]:
    """A category label on at most two lines."""
    if len(text) <= width or " " not in text:
        return [text]
    words = text.split()
    best = min(
        range(1, len(words)),
        key=lambda i: abs(len(" ".join(words[:i])) - len(" ".join(words[i:]))),
    )
    return [" ".join(words[:best]), " ".join(words[best:])]


def _frame(title: str, y_label: str, top: float) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' {FONT}>",
        f"<rect width='{WIDTH}' height='{HEIGHT}' fill='white'/>",
        f"<text x='{LEFT}' y='28' font-size='17' font-weight='bold'>{html.escape(title)}</text>",
        f"<text x='16' y='{TOP + plot_h / 2}' font-size='12' fill='#505a5f' "
        f"transform='rotate(-90 16 {TOP + plot_h / 2})' text-anchor='middle'>"
        f"{html.escape(y_label)}</text>",
    ]
    for i in range(5):
        v = top * i / 4
        y = TOP + plot_h - plot_h * i / 4
        out.append(
            f"<line x1='{LEFT}' x2='{WIDTH - RIGHT}' y1='{y:.1f}' y2='{y:.1f}' stroke='#dddddd'/>"
        )
        out.append(
            f"<text x='{LEFT - 6}' y='{y + 4:.1f}' font-size='11' text-anchor='end' "
            f"fill='#505a5f'>{v:g}</text>"
        )
    return out


def bars_svg(frame: pl.DataFrame, x: str, series: str | None, value: str, title: str) -> str:
    """Grouped vertical bars; a withheld value is a dashed empty bar labelled 'withheld'."""
    xs = list(dict.fromkeys(frame[x].to_list()))
    ss = list(dict.fromkeys(frame[series].to_list())) if series else [None]
    values = [v for v in frame[value].to_list() if v is not None]
    top = _nice_max(max(values) if values else 1.0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    out = _frame(title, value.replace("_", " "), top)
    group_w = plot_w / max(1, len(xs))
    bar_w = min(48.0, group_w * 0.8 / len(ss))
    lookup = {(r[x], r[series] if series else None): r[value] for r in frame.iter_rows(named=True)}
    for gi, xv in enumerate(xs):
        x0 = LEFT + gi * group_w + (group_w - bar_w * len(ss)) / 2
        for si, sv in enumerate(ss):
            if (xv, sv) not in lookup:  # no such combination (e.g. children in 65+ homes)
                continue
            v = lookup[(xv, sv)]
            bx = x0 + si * bar_w
            colour = COLOURS[si % len(COLOURS)]
            if v is None:
                out.append(
                    f"<rect x='{bx + 2:.1f}' y='{TOP + plot_h - 44}' width='{bar_w - 4:.1f}' "
                    f"height='44' fill='none' stroke='{colour}' stroke-dasharray='3 3'/>"
                )
                tx, ty = bx + bar_w / 2 + 3, TOP + plot_h - 20
                out.append(
                    f"<text x='{tx:.1f}' y='{ty}' font-size='9' text-anchor='middle' "
                    f"fill='#505a5f' transform='rotate(-90 {tx:.1f} {ty})'>withheld</text>"
                )
                continue
            h = plot_h * float(v) / top
            out.append(
                f"<rect x='{bx + 2:.1f}' y='{TOP + plot_h - h:.1f}' width='{bar_w - 4:.1f}' "
                f"height='{h:.1f}' fill='{colour}'/>"
            )
            out.append(
                f"<text x='{bx + bar_w / 2:.1f}' y='{TOP + plot_h - h - 4:.1f}' font-size='10' "
                f"text-anchor='middle'>{v:g}</text>"
            )
        for li, part in enumerate(_wrap(_label(xv))):
            out.append(
                f"<text x='{LEFT + gi * group_w + group_w / 2:.1f}' "
                f"y='{TOP + plot_h + 16 + 13 * li}' font-size='11' text-anchor='middle'>"
                f"{html.escape(part)}</text>"
            )
    out.append(
        f"<text x='{LEFT + plot_w / 2}' y='{TOP + plot_h + 50}' font-size='12' "
        f"text-anchor='middle' fill='#505a5f'>{html.escape(x.replace('_', ' '))}</text>"
    )
    if series:
        lx = LEFT
        for si, sv in enumerate(ss):
            out.append(
                f"<rect x='{lx}' y='{HEIGHT - 30}' width='12' height='12' "
                f"fill='{COLOURS[si % len(COLOURS)]}'/>"
            )
            label = html.escape(_label(sv))
            out.append(f"<text x='{lx + 18}' y='{HEIGHT - 20}' font-size='12'>{label}</text>")
            lx += 30 + 7 * len(label)
    out.append("</svg>")
    return "\n".join(out)


def line_svg(frame: pl.DataFrame, x: str, value: str, title: str) -> str:
    """One line over ordered x values (dates), points labelled; withheld points are skipped."""
    xs = frame[x].to_list()
    vs = frame[value].to_list()
    shown = [v for v in vs if v is not None]
    top = _nice_max(max(shown) if shown else 1.0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    out = _frame(title, value.replace("_", " "), top)
    step = plot_w / max(1, len(xs))
    at = [
        (LEFT + step * (i + 0.5), None if v is None else TOP + plot_h - plot_h * float(v) / top)
        for i, v in enumerate(vs)
    ]
    line = " ".join(f"{px:.1f},{py:.1f}" for px, py in at if py is not None)
    out.append(f"<polyline points='{line}' fill='none' stroke='{COLOURS[0]}' stroke-width='2'/>")
    for (px, py), xv, v in zip(at, xs, vs, strict=True):
        out.append(
            f"<text x='{px:.1f}' y='{TOP + plot_h + 18}' font-size='11' "
            f"text-anchor='middle'>{html.escape(_label(xv))}</text>"
        )
        if py is None:
            continue
        out.append(f"<circle cx='{px:.1f}' cy='{py:.1f}' r='4' fill='{COLOURS[0]}'/>")
        out.append(
            f"<text x='{px:.1f}' y='{py - 9:.1f}' font-size='11' text-anchor='middle'>{v:g}</text>"
        )
    out.append(
        f"<text x='{LEFT + plot_w / 2}' y='{TOP + plot_h + 40}' font-size='12' "
        f"text-anchor='middle' fill='#505a5f'>{html.escape(x.replace('_', ' '))}</text>"
    )
    out.append("</svg>")
    return "\n".join(out)


def chart_svg(query: NamedQuery, frame: pl.DataFrame) -> str | None:
    """The chart a query's hint asks for, as SVG text (None without a hint)."""
    if not query.chart:
        return None
    kind, *args = query.chart.split()
    if kind == "bars":
        x, series, value = args
        return bars_svg(frame, x, None if series == "-" else series, value, query.title)
    if kind == "line":
        x, _, value = args
        return line_svg(frame, x, value, query.title)
    raise ValueError(f"{query.name}: unknown chart kind {kind!r}")


def svg_to_png(svg: Path, png: Path) -> bool:
    """Screenshot the SVG with headless Chromium; False when no Chromium is installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "chart.html"
        page.write_text(
            "<html><body style='margin:0'>" + svg.read_text(encoding="utf-8") + "</body></html>"
        )
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--screenshot={png}",
                f"--window-size={WIDTH},{HEIGHT}",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return png.exists()


def markdown_table(frame: pl.DataFrame) -> str:
    """The answer as a Markdown table; withheld values shown as `withheld`."""
    cols = frame.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    for row in frame.iter_rows():
        cells = ["*withheld*" if v is None else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="run configuration of the published run")
    p.add_argument("--out", default=str(Path(__file__).parent), help="folder for the images")
    p.add_argument("--no-png", action="store_true", help="write SVG only")
    args = p.parse_args(argv)
    settings = read_settings(Path(args.config))
    policy = read_policy(settings.policy_path)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for query in list_queries():
        frame, _ = protect_result(query, run_query(settings.database_path, query.sql), policy)
        print(f"### {query.name}\n\n{markdown_table(frame)}\n")
        svg = chart_svg(query, frame)
        if svg is None:
            continue
        svg_path = out / f"{query.name}.svg"
        svg_path.write_text(svg, encoding="utf-8")
        if not args.no_png and svg_to_png(svg_path, out / f"{query.name}.png"):
            svg_path.unlink()
            print(f"wrote {out / (query.name + '.png')}\n")
        else:
            print(f"wrote {svg_path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
