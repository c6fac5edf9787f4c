"""The analyst guide: its figures are generated from a release (docs/img/make_charts.py) and
checked against it, and every `uprnlink` command it shows parses, the analysts' ones run."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import PipelineRun, QueryService
from uprnlink.cli import build_parser, main
from uprnlink.publish.queries import get_query
from uprnlink.publish.tabulation import TableSpec
from uprnlink.service.client_cli import _spec_from_args
from uprnlink.settings import PROJECT_ROOT

GUIDE = PROJECT_ROOT / "docs" / "analyst-guide.md"
GENERATOR = PROJECT_ROOT / "docs" / "img" / "make_charts.py"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_charts", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def guide_text() -> str:
    return GUIDE.read_text(encoding="utf-8")


def worked_questions(text: str) -> list[str]:
    """Named questions the guide works through (`--named NAME`), in order."""
    return list(dict.fromkeys(re.findall(r"--named ([a-z0-9_]+)", text)))


def command_lines(text: str) -> list[str]:
    """Every `uprnlink` command line the guide shows: lines of ```bash blocks that start with
    it, and `$ uprnlink ...` lines of ```text blocks (a terminal's transcript)."""
    lines = []
    for block in re.finditer(r"```(\w*)\n(.*?)```", text, re.S):
        for line in block.group(2).splitlines():
            line = line.strip()
            if block.group(1) == "text":
                if not line.startswith("$ uprnlink "):
                    continue
                line = line[2:]
            elif block.group(1) != "bash":
                continue
            if line.startswith("uprnlink "):
                lines.append(line)
    return lines


def argv_of(line: str) -> list[str]:
    """A command line's arguments after `uprnlink`, as the shell splits them."""
    words = shlex.split(line, comments=True)
    assert words[0] == "uprnlink", line
    return words[1:]


# ------------------------------------------------------------------ the guide as written


def test_every_uprnlink_command_line_in_the_guide_parses() -> None:
    parser = build_parser()
    lines = command_lines(guide_text())
    assert len(lines) >= 20
    for line in lines:
        try:
            parser.parse_args(argv_of(line))
        except SystemExit:
            pytest.fail(f"the guide's command does not parse: {line}")


def test_the_guide_has_a_generated_answer_for_each_question_it_works_through() -> None:
    text = guide_text()
    blocks = load_generator().guide_blocks(text)
    answers = [name for kind, name in blocks if kind == "answer"]
    assert len(answers) >= 6 and set(answers) == set(worked_questions(text))
    for name in answers:
        body = blocks[("answer", name)]
        assert f"uprnlink query --named {name}" in body
        assert f"](img/{name}.png)" in body and (GUIDE.parent / "img" / f"{name}.png").exists()
        assert "\n| --- |" in body  # a Markdown table
        assert get_query(name).title in text


def test_each_worked_question_shows_the_same_table_by_hand() -> None:
    """The `uprnlink table` line under each question builds exactly the question's table
    (the same cells, so the same values)."""
    blocks = load_generator().guide_blocks(guide_text())
    for (kind, name), body in blocks.items():
        if kind != "answer":
            continue
        line = next(x for x in body.splitlines() if x.startswith("uprnlink table "))
        args = build_parser().parse_args(argv_of(line))
        assert TableSpec.from_dict(_spec_from_args(args)) == get_query(name).spec, name


def test_the_guides_prose_quotes_no_figures_outside_generated_blocks() -> None:
    """A demo figure in the prose would go stale: figures live in generated blocks."""
    gen = load_generator()
    prose = gen.BLOCK_RE.sub("", guide_text())
    prose = re.sub(r"```.*?```", "", prose, flags=re.S)
    prose = re.sub(r"`[^`\n]*`", "", prose)
    allowed = {"1,000", "2021", "256", "201", "202"}  # per 1,000; Census 2021; SHA-256; HTTP
    numbers = set(re.findall(r"\d[\d,]*\d|\d", prose))
    big = {n for n in numbers if len(n.replace(",", "")) >= 3} - allowed
    assert not big, f"figures in the guide's prose (generate them, or remove them): {big}"


# ------------------------------------------------------------- generated from a release


@pytest.fixture
def release(small_run: PipelineRun) -> Iterator[tuple[ModuleType, Any]]:
    """The generator and the small run's release, open (close it before running the
    generator's command line in the same test: DuckDB opens a file once per process)."""
    gen = load_generator()
    opened = gen.Release.open(small_run.config)
    yield gen, opened
    opened.close()


@pytest.mark.slow
def test_the_generator_writes_blocks_for_exactly_the_named_questions_the_guide_works_through(
    release: tuple[ModuleType, Any],
) -> None:
    gen, opened = release
    text = guide_text()
    blocks, frames = gen.generate(opened, text)
    answers = {name for kind, name in blocks if kind == "answer"}
    assert answers == set(worked_questions(text)) == set(frames)
    assert {name for kind, name in blocks if kind == "figure"} == set(gen.FIGURES)
    for name in answers:
        body = blocks[("answer", name)]
        header = " | ".join(frames[name].columns)
        assert f"| {header} |" in body
        assert body.count("\n| ") == frames[name].height + 2  # header, rule, one per row
        assert "In figures: " in body


@pytest.mark.slow
def test_regenerating_from_one_release_twice_is_stable(
    release: tuple[ModuleType, Any], small_run: PipelineRun, tmp_path: Path
) -> None:
    gen, opened = release
    first, _ = gen.generate(opened, guide_text())
    rewritten = gen.rewrite(guide_text(), first)
    second, _ = gen.generate(opened, rewritten)
    assert first == second
    assert gen.rewrite(rewritten, second) == rewritten
    assert gen.check(rewritten, second, opened).status == "match"

    # The command line: write once, then again (nothing changes), then check.
    opened.close()
    guide, img = tmp_path / "guide.md", tmp_path / "img"
    shutil.copy(GUIDE, guide)
    args = ["--config", str(small_run.config), "--guide", str(guide), "--out", str(img)]
    assert gen.main(args) == 0
    once = guide.read_text(encoding="utf-8")
    assert once == rewritten
    assert gen.main(args) == 0
    assert guide.read_text(encoding="utf-8") == once
    assert {p.stem for p in img.glob("*.png")} == {n for k, n in first if k == "answer"}
    assert gen.main([*args, "--check"]) == 0


@pytest.mark.slow
def test_a_changed_digit_in_any_block_is_caught_by_the_check(
    release: tuple[ModuleType, Any], small_run: PipelineRun, tmp_path: Path
) -> None:
    gen, opened = release
    blocks, _ = gen.generate(opened, guide_text())
    text = gen.rewrite(guide_text(), blocks)
    for (kind, name), body in blocks.items():
        lines = body.splitlines()
        # The last line with a digit that is not the demo's identity (checked below).
        at = max(i for i, x in enumerate(lines) if re.search(r"\d", x) and "<!--" not in x)
        digit = re.search(r"\d", lines[at])
        assert digit is not None
        i = digit.start()
        lines[at] = lines[at][:i] + str((int(lines[at][i]) + 1) % 10) + lines[at][i + 1 :]
        changed = text.replace(body, "\n".join(lines) + "\n", 1)
        assert changed != text
        result = gen.check(changed, blocks, opened)
        assert result.status == "differs" and result.exit_code == 1, (kind, name)
        assert f"{kind}: {name}, line {at + 1}" in result.message
        assert "make guide" in result.message

    # Through the command line, as `make demo` and `make guide-check` run it.
    opened.close()
    guide = tmp_path / "guide.md"
    body = blocks[("answer", "overcrowding_by_deprivation")]
    row = next(x for x in body.splitlines() if x.startswith("| 1 |"))
    guide.write_text(text.replace(row, row.replace("| 1 |", "| 1 | 9", 1), 1), encoding="utf-8")
    args = ["--config", str(small_run.config), "--guide", str(guide), "--out", str(tmp_path)]
    assert gen.main([*args, "--check"]) == 1


@pytest.mark.slow
def test_a_guide_from_another_demo_is_reported_as_such_not_as_a_mismatch(
    release: tuple[ModuleType, Any],
) -> None:
    """Another checkout's demo has other keys (so other figures), or other people or seed:
    the check says so instead of listing every cell."""
    gen, opened = release
    blocks, _ = gen.generate(opened, guide_text())
    text = gen.rewrite(guide_text(), blocks)
    meta = gen.DEMO_META_RE.search(text).group(0)
    keys = re.search(r"keys=(\S+)", meta).group(1)
    other_keys = text.replace(meta, meta.replace(keys, "kid-0000000000000000/rel-00"))
    result = gen.check(other_keys, blocks, opened)
    assert result.status == "other-demo" and result.exit_code == 3
    assert "other keys" in result.message and "make guide" in result.message
    seed = re.search(r"seed=(\S+)", meta).group(0)
    other_seed = text.replace(meta, meta.replace(seed, "seed=999"))
    result = gen.check(other_seed, blocks, opened)
    assert result.status == "other-demo" and "not checked" in result.message


# ------------------------------------------------------------------ against the service


@pytest.mark.slow
def test_the_guides_analyst_commands_run_against_the_service(
    query_service: QueryService,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every table, named question and catalogue command in the guide answers (on the small
    run's service, as an analyst). Commands that keep files or submit jobs change the
    service's state and are tested in test_queries and test_analyst_outputs."""
    monkeypatch.setenv("UPRNLINK_TOKEN", query_service.tokens["analyst"])
    monkeypatch.chdir(tmp_path)
    ran = 0
    for line in command_lines(guide_text()):
        argv = argv_of(line)
        if argv[0] not in ("table", "query", "catalogue"):
            continue
        if {"--csv", "--parquet", "--out"} & set(argv):
            continue
        assert main([*argv, "--url", query_service.url]) == 0, (line, capsys.readouterr().err)
        ran += 1
    assert ran >= 15
