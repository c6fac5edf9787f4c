"""Render a self-contained HTML page from the package's Jinja2 templates.

Every value is escaped (`autoescape=True`) and a name missing from the context is an error
(`StrictUndefined`), so a typo cannot silently drop a figure from a report. A page loads
nothing from elsewhere: styles are inline, and its Content-Security-Policy allows scripts only
on a page that has charts (Vega-Lite specs drawn by chart libraries inlined in the page).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from uprnlink.errors import PublishError

# Why: with no script-src a page runs no script at all; pages with charts need inline scripts
# and 'unsafe-eval' (Vega compiles its expressions with Function()).
_CSP_NO_SCRIPTS = "default-src 'none'; style-src 'unsafe-inline'"
_CSP_CHARTS = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'unsafe-inline'; img-src data:"
)


@dataclass(frozen=True)
class Chart:
    """A Vega-Lite spec to draw in the page, under the element id `chart-<key>`."""

    key: str
    spec: Mapping[str, Any]


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):  # DuckDB histogram bins can be Decimal
        return float(value)
    return str(value)


@cache
def environment() -> Environment:
    """The package's Jinja2 environment: templates from `uprnlink/html/templates/`."""
    env = Environment(
        loader=PackageLoader("uprnlink.html", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    # `tojson` writes JSON that cannot close a <script> element (<, >, & and ' as \u escapes).
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "default": _json_default}
    return env


def inline_scripts(sources: Sequence[str]) -> Markup:
    """JavaScript sources (bundled chart libraries) as inline <script> elements.

    The sources are code shipped with a package, never data; one that could end its element
    early is refused rather than escaped (escaping would break it).
    """
    parts = []
    for i, src in enumerate(sources):
        if "</script" in src.lower() or "<!--" in src:
            raise PublishError(f"script {i + 1} cannot be inlined (it could close its element)")
        parts.append(f"<script>{src}</script>")
    return Markup("".join(parts))


def render_page(
    template: str,
    *,
    title: str,
    charts: Sequence[Chart] = (),
    chart_libraries: Markup | None = None,
    **context: Any,
) -> str:
    """A whole HTML page from `template` (which extends `base.html.j2`).

    `charts` are drawn by `chart_libraries` (from `inline_scripts`); a page without charts gets
    no script at all and a policy that forbids them.
    """
    if charts and chart_libraries is None:
        raise ValueError(f"{template}: charts need the chart libraries")
    specs = {c.key: c.spec for c in charts}
    if len(specs) != len(charts):
        raise ValueError(f"{template}: two charts share a key")
    return (
        environment()
        .get_template(template)
        .render(
            title=title,
            csp=_CSP_CHARTS if charts else _CSP_NO_SCRIPTS,
            chart_specs=specs,
            chart_libraries=chart_libraries if charts else Markup(""),
            **context,
        )
    )
