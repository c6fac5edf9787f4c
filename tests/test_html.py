"""The shared HTML stack (uprnlink.html): every value escaped, no script without charts, chart
specs that cannot break out of their script element."""

from __future__ import annotations

import json
import re

import pytest

from uprnlink.errors import PublishError
from uprnlink.html import Chart, environment, inline_scripts, render_page

HOSTILE = "<script>alert('x')</script>"


def test_templates_ship_with_the_package() -> None:
    names = set(environment().list_templates())
    assert {"base.html.j2", "macros.html.j2", "report.css", "draw_charts.js"} <= names
    assert {"audit.html.j2", "quality.html.j2", "quality_engineer.html.j2"} <= names


def test_every_value_is_escaped() -> None:
    env = environment()
    assert env.autoescape is True
    macros = env.get_template("macros.html.j2").module
    table = str(macros.table([HOSTILE], [[HOSTILE, 'a"b&c']], numeric=(1,)))  # type: ignore[attr-defined]
    facts = str(macros.facts([(HOSTILE, HOSTILE)]))  # type: ignore[attr-defined]
    for html in (table, facts):
        assert "<script" not in html and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "a&#34;b&amp;c" in table


def test_a_page_without_charts_has_no_script_and_forbids_them() -> None:
    page = render_page("base.html.j2", title=HOSTILE)
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "script-src" not in page
    assert "default-src &#39;none&#39;" in page
    assert "<title>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</title>" in page


def test_a_missing_value_is_an_error() -> None:
    with pytest.raises(Exception, match="undefined"):
        render_page("audit.html.j2", title="t")  # no heading, no sections


def test_chart_specs_cannot_close_their_script_element() -> None:
    spec = {"data": {"values": [{"label": "</script><script>alert(1)</script>", "n": 1}]}}
    page = render_page(
        "base.html.j2",
        title="t",
        charts=[Chart("c", spec)],
        chart_libraries=inline_scripts(["window.vegaEmbed = function () {};"]),
    )
    assert "</script><script>alert(1)" not in page
    found = re.search(r'<script type="application/json" id="vega-specs">(.*?)</script>', page, re.S)
    assert found is not None and json.loads(found.group(1)) == {"c": spec}
    assert "script-src 'unsafe-inline'" in page.replace("&#39;", "'")


def test_chart_libraries_are_checked() -> None:
    with pytest.raises(PublishError, match="cannot be inlined"):
        inline_scripts(["var s = '</script>';"])
    with pytest.raises(ValueError, match="chart libraries"):
        render_page("base.html.j2", title="t", charts=[Chart("c", {})])
    with pytest.raises(ValueError, match="share a key"):
        render_page(
            "base.html.j2",
            title="t",
            charts=[Chart("c", {}), Chart("c", {})],
            chart_libraries=inline_scripts(["1"]),
        )
