"""A quick command line: ``genrec --help``, ``genrec CMD --help``, a bad flag and a bad config answer before
the model stack loads. Each check runs in a fresh interpreter (``python -c``) and reads its ``sys.modules``:
what a command imports is what makes it slow (torch and transformers alone take seconds), so "quick" is
checked as "imports none of them", which does not depend on how busy the machine is."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import genrec

REPO = Path(genrec.__file__).resolve().parents[1]
# the libraries that take seconds to import; each loads inside the command that needs it
HEAVY = ("torch", "transformers", "sentence_transformers", "faiss", "lightgbm", "fastapi", "accelerate",
         "uvicorn", "scipy", "sklearn")
COMMANDS = ("data", "embed", "semid", "train", "eval", "report", "demo", "carousel", "serve", "review")

# runs ``genrec.cli.main(argv)`` for each argv and prints one JSON line: each call's exit status, and the heavy
# modules loaded once every call is done
RUNNER = """
import contextlib, io, json, sys
from genrec.cli import main
codes = []
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            codes.append(main(argv))
        except SystemExit as e:
            codes.append(e.code)
print(json.dumps({"codes": codes, "heavy": sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)}))
"""


def _fresh(code: str, *args: str) -> subprocess.CompletedProcess:
    """``python -c code args`` in a new interpreter at the repository root."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)


def _run_cli(*argvs: list[str]) -> dict:
    """Each argv through ``genrec.cli.main`` in one fresh interpreter: {"codes": [...], "heavy": [...]}."""
    proc = _fresh(RUNNER, json.dumps(list(argvs)), json.dumps(HEAVY))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _leaf_commands() -> list[list[str]]:
    """Every command path of the parser (``["data", "import", "instacart"]``, ``["train"]``, ...)."""
    from genrec.cli import build_parser

    def walk(parser, path):
        subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        out = [path] if path else []
        for action in subs:
            for name, child in action.choices.items():
                out += walk(child, path + [name])
        return out

    return walk(build_parser(), [])


def test_building_the_parser_imports_no_heavy_library():
    code = ("import json, sys; from genrec.cli import build_parser; build_parser(); "
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    proc = _fresh(code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_help_lists_every_command_and_loads_nothing_heavy():
    proc = _fresh("import sys; from genrec.cli import main; sys.argv = ['genrec', '--help']; main()")
    assert proc.returncode == 0, proc.stderr
    listed = proc.stdout.split("{", 1)[1].split("}", 1)[0].split(",")  # argparse's "{data,embed,...}"
    assert sorted(listed) == sorted(COMMANDS)
    for command in COMMANDS:
        assert f"\n    {command} " in proc.stdout  # each with its one-line help
    assert {p[0] for p in _leaf_commands()} == set(COMMANDS)


def test_every_command_help_loads_nothing_heavy():
    commands = _leaf_commands()
    result = _run_cli(*[path + ["--help"] for path in commands])
    assert result["codes"] == [0] * len(commands)
    assert result["heavy"] == []


@pytest.mark.parametrize("argv", [
    ["train", "--bogus"],  # an unknown flag
    ["train", "--data", "d", "--out", "o"],  # a missing required flag
    ["carousel", "--run", "r", "--requests", "q", "--out", "o", "--dtype", "float16"],  # a value not among choices
    ["carousel", "--run", "r", "--requests", "q", "--out", "o", "--k", "0"],  # a value the config's rules refuse
    ["eval", "--data", "d", "--beam", "0"],
    ["serve", "--run", "r", "--max-batch", "0"],
    ["semid", "audit", "--run", "r", "--out", "o", "--top", "many"],  # not an int
])
def test_a_bad_flag_exits_2_before_the_model_stack_loads(argv):
    result = _run_cli(argv)
    assert result == {"codes": [2], "heavy": []}


def test_a_bad_config_exits_2_before_the_model_stack_loads(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("decoder:\n  d_modle: 64\n")  # a misspelt key
    out = tmp_path / "run"
    result = _run_cli(["train", "--data", str(tmp_path), "--config", str(bad), "--out", str(out)],
                      ["semid", "train", "--data", str(tmp_path), "--config", str(bad), "--out", str(out)],
                      ["demo", "--workdir", str(tmp_path / "demo"), "--config", str(bad)],
                      ["embed", "--data", str(tmp_path), "--out", str(tmp_path / "e.parquet"), "--config", str(bad)])
    assert result == {"codes": [2, 2, 2, 2], "heavy": []}
    assert not out.exists() and not (tmp_path / "demo").exists()


def test_the_message_of_a_bad_config_names_file_section_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("decoder:\n  d_modle: 64\n")
    proc = _fresh("import sys; from genrec.cli import main; sys.exit(main(sys.argv[1:]))",
                  "train", "--data", str(tmp_path), "--config", str(bad), "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    message = proc.stderr.strip()
    assert "\n" not in message
    assert message.startswith(f"genrec: config error: {bad}: decoder.d_modle: unknown key (did you mean 'd_model'?)")
