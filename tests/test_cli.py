"""The CLI shell itself: start-up cost, help, version, completions, packaging, error mapping."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, modules_loaded_by, run

HEAVY = ("torch", "sentence_transformers", "lancedb", "transformers", "ray")



def _commands() -> list[str]:
    from typer.main import get_command

    from arrowsmith.cli.app import app

    return sorted(get_command(app).commands)


@pytest.mark.parametrize("args", [["--help"], ["completions", "bash"]] +
                         [[c, "--help"] for c in ("chunk", "embed", "index", "query", "compress",
                                                  "eval", "tune", "doctor", "models")])
def test_help_and_completion_do_not_import_heavy_modules(args):
    loaded, proc = modules_loaded_by(args, HEAVY, timeout=60)
    assert loaded == [], proc.stderr
    assert "Usage" in proc.stdout or "complete" in proc.stdout


def test_all_six_stages_are_commands():
    assert {"chunk", "embed", "index", "query", "compress", "eval"} <= set(_commands())


def test_version_matches_package_metadata():
    from importlib.metadata import version

    result = run(["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"arrowsmith {version('arrowsmith')}"


def test_unknown_command_is_a_usage_error():
    result = run(["frobnicate"])
    assert result.exit_code == 2
    assert "frobnicate" in result.stderr


def test_help_shows_env_vars_and_exit_codes():
    result = run(["--help"])
    assert result.exit_code == 0
    assert "ARROWSMITH_PROGRESS" in result.stdout
    assert "75" in result.stdout and "65" in result.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_are_current(shell):
    from arrowsmith.cli.completion import GENERATORS, SHELLS

    committed = (ROOT / "completions" / SHELLS[shell]).read_text()
    assert committed == GENERATORS[shell](), f"completions/{SHELLS[shell]} is stale: run `make completions`"


def test_bash_completion_is_valid_and_completes_commands():
    script = ROOT / "completions" / "arrowsmith.bash"
    subprocess.run(["bash", "-n", str(script)], check=True)
    probe = (f"source {script}; COMP_WORDS=(arrowsmith em); COMP_CWORD=1; _arrowsmith; "
             'printf "%s\\n" "${COMPREPLY[@]}"')
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["embed"]
    probe = (f"source {script}; COMP_WORDS=(arrowsmith chunk --stra); COMP_CWORD=2; _arrowsmith; "
             'printf "%s\\n" "${COMPREPLY[@]}"')
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["--strategy"]


def test_readme_documents_every_command():
    readme = (ROOT / "README.md").read_text()
    for command in _commands():
        assert f"### `arrowsmith {command}`" in readme, f"README has no section for {command}"
        assert f"arrowsmith {command} " in readme.split(f"### `arrowsmith {command}`", 1)[1]


@pytest.mark.slow
def test_wheel_installs_namespaced_packages_only(tmp_path):
    """`pip install .` must give arrowsmith.cli etc., never bare top-level cli/commands/plugins."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT)], check=True, capture_output=True, timeout=300)
    top = {p.name for p in target.iterdir()}
    assert not top & {"cli", "commands", "plugins"}, top
    for sub in ("cli", "commands", "plugins"):
        assert (target / "arrowsmith" / sub / "__init__.py").exists()
    proc = subprocess.run([sys.executable, "-c",
                           "import arrowsmith.cli.app, arrowsmith.plugins.registry as r, json;"
                           "print(json.dumps([p.name for p in r.list_plugins()]))"],
                          capture_output=True, text=True, env={"PYTHONPATH": str(target), "PATH": ""},
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "sentence-transformers" in json.loads(proc.stdout)


def test_exit_code_survives_arrow_threads_at_shutdown():
    # torch + a pyarrow CSV read used to abort at interpreter exit about one run in three
    # ("terminate called without an active exception", exit 134 instead of 65)
    # four separate processes (the abort is in each one's exit), started together
    procs = [subprocess.Popen([sys.executable, "-m", "arrowsmith.cli", "embed", "--input-format", "csv"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(4)]
    try:
        for p in procs:  # all four get their input before any is waited on
            p.stdin.write(b"text\n")
            p.stdin.close()
            p.stdin = None  # communicate() would flush the closed file
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [65] * 4, [err.decode()[-500:] for _, err in outs]


def test_global_flags_may_follow_the_command(tmp_path):
    from arrowsmith.cli.app import hoist_global_flags

    hoisted = hoist_global_flags(["embed", "a.csv", "-q", "-f", "jsonl"])
    assert hoisted == ["-q", "embed", "a.csv", "-f", "jsonl"]
    assert hoist_global_flags(["-v", "query", "--", "-q"]) == ["-v", "query", "--", "-q"]  # after --: data
    src = tmp_path / "rows.csv"
    src.write_text("id,text\na,tides follow the moon\n")
    loud = run(["chunk", str(src), "-f", "jsonl"])
    quiet = run(["chunk", str(src), "-f", "jsonl", "--quiet"])
    assert loud.exit_code == quiet.exit_code == 0
    assert "chunk: 1 documents read" in loud.stderr and quiet.stderr == ""
    assert quiet.stdout_bytes == loud.stdout_bytes and b'"id": "a"' in quiet.stdout_bytes


def test_bad_paths_are_one_line_errors_not_tracebacks(tmp_path):
    (tmp_path / "a_file").write_text("x")
    out_under_file = run(["chunk", str(ROOT / "samples"), "-o", str(tmp_path / "a_file" / "out.jsonl")])
    assert out_under_file.exit_code == 74  # as `> a_file/out.jsonl` fails in a shell (issue 21)
    assert f"not a directory: {tmp_path / 'a_file'}" in out_under_file.stderr
    assert "Traceback" not in out_under_file.stderr
    queries_dir = run(["query", "--db", str(tmp_path / "store"), "--file", str(tmp_path)])
    assert queries_dir.exit_code == 2 and "Traceback" not in queries_dir.stderr
    assert not (tmp_path / "a_file" / "out.jsonl").exists()
