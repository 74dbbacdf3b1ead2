"""Docs that cannot drift from the code.

- README.md, "Run folder": its table lists exactly the names of ``genrec/run/layout.py``;
- README.md, "Configuration": its table lists exactly the sections of ``RunConfig``;
- README.md, "Commands": its table lists exactly the commands ``genrec --help`` offers;
- every docs page a source, config or Markdown file names exists, every relative Markdown link (and its
  ``#anchor``) resolves, and every ``PAGE.md, "Section"`` reference names a heading of that page;
- README.md, "From Python": the example runs, on a small trained run in place of the demo's.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import io
import os
import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
FIXTURE = REPO / "tests" / "fixtures" / "run-v1"  # a small trained run and its data (tests/unit/test_run_compat.py)
SCANNED_SUFFIXES = (".py", ".yaml", ".yml", ".md")
SKIPPED_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__"}  # anywhere: environments and caches
SKIPPED_TOP = {"work", "runs", "data", "build", "dist"}  # at the root: what runs and builds write

BACKTICKED = re.compile(r"`([^`]+)`")
PAGE_PATH = re.compile(r"(?<![\w.-])docs/[\w./-]*?\.md\b")  # docs/NAME.md anywhere in a text
MD_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
MD_REF_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)  # [label]: target
# PAGE.md, "Section" (PAGE may be a Markdown link's target: [x](PAGE.md), "Section"); README, "Section" too
SECTION_REF = re.compile(r"(?<![\w/.-])((?:\.\./)*[\w./-]*?[\w-]+\.md|README)\)?,\s+\"([^\"]+)\"")


def _sections(text: str, level: int = 2) -> dict[str, str]:
    """Heading text -> the text under it, for the headings of one level (``##``)."""
    marks = list(re.finditer(rf"^{'#' * level} (.+)$", text, re.M))
    return {m.group(1).strip(): text[m.end():marks[i + 1].start() if i + 1 < len(marks) else len(text)]
            for i, m in enumerate(marks)}


def _first_column(section: str) -> list[str]:
    """The backticked names in the first cell of each body row of the section's first table."""
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert len(rows) > 2, "the section has no table"
    names = []
    for row in rows[2:]:  # past the header and the |---| line
        cell = row.split("|")[1]
        names += BACKTICKED.findall(cell)
    return names


def _readme_table(heading: str) -> list[str]:
    sections = _sections(README.read_text())
    assert heading in sections, f"README.md has no '## {heading}' section"
    return _first_column(sections[heading])


def _layout_names() -> set[str]:
    """Every path a run folder may hold, from ``genrec/run/layout.py``: its string constants (its own and those
    it re-exports from ``semid``), folders (``*_DIR``) with a trailing slash; the constants assigned after
    ``DECODER_DIR`` live under that folder, as the module says."""
    from genrec.run import layout

    values = {name: getattr(layout, name) for name in layout.__all__ if isinstance(getattr(layout, name), str)}
    order = [t.id for node in ast.parse(Path(layout.__file__).read_text()).body if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name)]
    under = set(order[order.index("DECODER_DIR") + 1:])
    out = set()
    for name, value in values.items():
        path = f"{layout.DECODER_DIR}/{value}" if name in under else value
        out.add(path + "/" if name.endswith("_DIR") else path)
    return out


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> set[str]:
    """``genrec ...`` for every subcommand that runs something (a leaf, or a parser with its own function)."""
    out = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = prefix + (name,)
                has_subs = any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
                if not has_subs or sub.get_default("func") is not None:
                    out.add("genrec " + " ".join(path))
                out |= _commands(sub, path)
    return out


def test_readme_run_folder_lists_the_layout():
    listed = _readme_table("Run folder")
    assert len(listed) == len(set(listed)), f"listed twice: {sorted(n for n in listed if listed.count(n) > 1)}"
    want = _layout_names()
    assert set(listed) == want, (f"README.md, \"Run folder\" misses {sorted(want - set(listed))} and lists "
                                 f"{sorted(set(listed) - want)}, which genrec/run/layout.py does not name")


def test_readme_config_sections_are_the_run_configs():
    from genrec.run.config import RunConfig

    sections = {f.name for f in dataclasses.fields(RunConfig)
                if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory())}
    listed = _readme_table("Configuration")
    assert set(listed) == sections, (f"README.md, \"Configuration\" misses {sorted(sections - set(listed))} "
                                     f"and lists {sorted(set(listed) - sections)}, which RunConfig lacks")


def test_readme_lists_every_command():
    from genrec.cli import build_parser

    commands = _commands(build_parser())
    assert "genrec serve" in commands and "genrec data import instacart" in commands  # the walk itself works
    listed = set(_readme_table("Commands"))
    assert listed == commands, (f"README.md, \"Commands\" misses {sorted(commands - listed)} and lists "
                                f"{sorted(listed - commands)}, which genrec --help does not offer")


def _text_files() -> list[Path]:
    """The project's .py, .yaml and .md files (this one left out: it holds broken references on purpose)."""
    out = []
    for root, dirs, files in os.walk(REPO):
        top = Path(root) == REPO
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info")
                   and not (top and d in SKIPPED_TOP)]
        out += [Path(root) / f for f in files if f.endswith(SCANNED_SUFFIXES)]
    return [p for p in out if p != Path(__file__).resolve()]


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _headings(page: Path) -> list[str]:
    """The page's headings, Markdown emphasis and code marks dropped (fenced code skipped)."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    return [re.sub(r"[`*]", "", m.group(1)).strip() for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)]


def _names_heading(ref: str, headings: list[str]) -> bool:
    """A section reference names a heading: the whole heading, or the heading with its closing parenthetical
    left off (``"The demo"`` for ``## The demo (`genrec demo`, 500 shoppers' last basket)``)."""
    ref = re.sub(r"[`*]", "", ref)
    return any(h == ref or (h.startswith(ref + " (") and h.endswith(")")) for h in headings)


def _resolve(source: Path, target: str) -> Path:
    """A page named in ``source``: ``docs/...`` and ``README`` from the repository root, Markdown link targets
    from the Markdown file's own folder."""
    if target == "README":
        return README
    if target.startswith("docs/") and source.suffix != ".md":
        return REPO / target
    base = source.parent if source.suffix == ".md" else REPO
    return (base / target).resolve()


def _doc_problems(path: Path, text: str) -> list[str]:
    rel = path.relative_to(REPO)
    problems = []
    for m in PAGE_PATH.finditer(text):
        if not (REPO / m.group(0)).is_file():
            problems.append(f"{rel}: {m.group(0)} does not exist")
    if path.suffix == ".md":
        prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
        for target in MD_LINK.findall(prose) + MD_REF_LINK.findall(prose):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            page, _, anchor = target.partition("#")
            page_path = _resolve(path, page) if page else path
            if not page_path.exists():
                problems.append(f"{rel}: link to {target}: {page} does not exist")
            elif anchor and anchor not in {_slug(h) for h in _headings(page_path)}:
                problems.append(f"{rel}: link to {target}: no heading of {page or rel} has that anchor")
    for m in SECTION_REF.finditer(text):
        page, ref = m.group(1), " ".join(re.sub(r"\n\s*#?", " ", m.group(2)).split())
        page_path = _resolve(path, page)
        if not page_path.is_file():
            problems.append(f"{rel}: {page}, \"{ref}\": no such page")
        elif not _names_heading(ref, _headings(page_path)):
            problems.append(f"{rel}: {page}, \"{ref}\": {page} has no such heading")
    return problems


def test_docs_references_resolve():
    files = _text_files()
    assert README in files and REPO / "docs" / "ranking.md" in files
    problems = [p for path in files for p in _doc_problems(path, path.read_text(errors="replace"))]
    assert not problems, "\n".join(problems)


def test_doc_reference_checks_catch_breakage():
    """The checks above find what they must: a missing page, a missing section, a missing anchor."""
    src = REPO / "genrec" / "example.py"
    assert _doc_problems(src, '# docs/ranking.md, "Commands"') == []
    assert _doc_problems(src, '# see docs/no-such-page.md') != []
    assert _doc_problems(src, '# (docs/ranking.md, "No such\n    # section")') != []
    assert _doc_problems(src, '# (README, "Run folder")') == []
    md = REPO / "docs" / "example.md"
    assert _doc_problems(md, "[x](ranking.md#commands)") == []
    assert _doc_problems(md, "[x](ranking.md#no-such-anchor)") != []
    assert _doc_problems(md, '[ranking.md](ranking.md), "The demo"') == []
    assert _doc_problems(md, '[ranking.md](ranking.md), "The dem"') != []


def _readme_example() -> str:
    section = _sections(README.read_text())["From Python"]
    blocks = re.findall(r"^```python\n(.*?)^```", section, re.M | re.S)
    assert len(blocks) == 1, "README.md, \"From Python\" should hold one ```python block"
    return blocks[0]


def test_readme_python_example_runs(tmp_path, one_thread):
    code = _readme_example()
    assert "from genrec import Retriever" in code and '"work/demo/run"' in code
    shutil.copytree(FIXTURE / "data", tmp_path / "data")  # a copy: nothing may write into the repository
    shutil.copytree(FIXTURE / "run", tmp_path / "run")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.replace("work/demo/run", str(tmp_path / "run")), "README.md", "exec"), {"__name__": "readme"})
    lines = out.getvalue().splitlines()
    assert len(lines) == 10, out.getvalue()  # k=10 products for the one history

    import pyarrow.parquet as pq

    sids = dict(zip(*pq.read_table(FIXTURE / "run" / "sids.parquet", columns=["item_id", "sid"]).to_pydict().values()))
    for line in lines:
        item_id, sid, score, source = line.split(maxsplit=3)
        assert sids[int(item_id)] == sid, line  # a product of the run, with its own Semantic ID
        assert re.fullmatch(r"\d+(_\d+)+", sid) and float(score) == float(score)
        assert source in {"generated", "buy again", "co-purchase", "new product", "similar"}, line
