"""Docs that cannot rot: the generated reference is current, every path the docs and the code point
to exists (with its section), and every option an example or a sentence names is one the command has."""

from __future__ import annotations

import itertools
import re
from functools import cache
from pathlib import Path

import pytest
from conftest import ROOT

MARKDOWN = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "benchmarks").glob("*.md")])
SOURCES = sorted(p for top in ("cli", "commands", "plugins", "tests", "benchmarks")
                 for p in (ROOT / top).rglob("*.py") if ".venv" not in p.parts)
# repository paths as prose and comments write them: docs/design.md#schemas, plugins/base.py, README.md
# (a bare name counts when it is an upper-case one, as README.md is: those live at the root)
REPO_PATH = re.compile(r"(?<![\w/.~-])((?:(?:cli|commands|plugins|tests|benchmarks|docs|completions|samples)/"
                       r"[\w./-]*[\w-]\.(?:py|md|toml|sh|bash|fish))|[A-Z][A-Z_]+\.md)(#[\w-]+)?")
MD_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`([^`\n]+)`")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ---- the generated reference ----------------------------------------------------------------

def test_cli_reference_is_current():
    from arrowsmith.cli.reference import OUTPUT, render

    committed = (ROOT / OUTPUT).read_text(encoding="utf-8")
    assert committed == render(), (f"{OUTPUT} is stale: run `make docs` "
                                   f"(or `.venv/bin/python -m arrowsmith.cli.reference {OUTPUT}`)")


def test_cli_reference_lists_every_option_with_its_env_var():
    from typer.main import get_command

    from arrowsmith.cli.app import app

    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for name, command in get_command(app).commands.items():
        section = text.split(f"## `arrowsmith {name}`", 1)[1].split("\n## ", 1)[0]
        for p in command.params:
            if p.param_type_name == "option" and "--help" not in p.opts:
                row = next((ln for ln in section.splitlines() if ln.startswith(f"| `{p.opts[0]}`")), None)
                assert row is not None, f"docs/cli.md: {name} {p.opts[0]} missing"
                if isinstance(p.envvar, str):
                    assert p.envvar in row, f"docs/cli.md: {name} {p.opts[0]} lacks {p.envvar}"


# ---- every reference resolves inside the repository -----------------------------------------

def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@cache
def _anchors(path: Path) -> frozenset[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for line in text.splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return frozenset(out)


def _broken(target: Path, anchor: str | None) -> str | None:
    if not target.exists():
        return "no such file"
    if anchor and target.suffix == ".md" and anchor not in _anchors(target):
        return f"no section #{anchor} (has: {', '.join(sorted(_anchors(target)))})"
    return None


# files outside the repository that code may name, and where they are
OUTSIDE = {"PROVENANCE.md": "../shared/data/cranfield/PROVENANCE.md, the Cranfield data set's notes"}


def _code_references():
    for path in SOURCES:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in REPO_PATH.finditer(line):
                yield f"{_rel(path)}:{lineno}", m.group(1), (m.group(2) or "#")[1:] or None


def test_paths_named_in_code_exist():
    """Comments and docstrings point at files (and sections) that are in the repository."""
    problems = []
    for where, ref, anchor in _code_references():
        if ref in OUTSIDE:
            continue
        why = _broken(ROOT / ref, anchor)
        if why:
            problems.append(f"{where}: {ref}{'#' + anchor if anchor else ''}: {why}")
    assert not problems, ("write repository paths from its root, sections as anchors "
                          "(docs/design.md#schemas, benchmarks/RESULTS.md):\n" + "\n".join(problems))


def test_markdown_links_resolve():
    problems = []
    for md in MARKDOWN:
        for lineno, line in enumerate(md.read_text(encoding="utf-8").splitlines(), 1):
            for m in MD_LINK.finditer(line):
                link = m.group(1)
                if re.match(r"[a-z]+:", link):  # https:, mailto:
                    continue
                file, _, anchor = link.partition("#")
                target = (md.parent / file).resolve() if file else md
                why = _broken(target, anchor or None)
                if why:
                    problems.append(f"{_rel(md)}:{lineno}: ({link}): {why}")
    assert not problems, "\n".join(problems)


def test_repository_paths_in_markdown_exist():
    """`cli/io.py`, `docs/store.md`, … named in prose are files that exist (no link needed)."""
    problems = []
    for md in MARKDOWN:
        text = md.read_text(encoding="utf-8")
        for lineno, line in enumerate(text.splitlines(), 1):
            for span in INLINE_CODE.findall(line):
                for m in REPO_PATH.finditer(span):
                    if "/" not in m.group(1) and md.parent != ROOT:
                        continue  # a bare name beside another page, e.g. benchmarks/RESULTS.md naming itself
                    why = _broken(ROOT / m.group(1), (m.group(2) or "#")[1:] or None)
                    if why:
                        problems.append(f"{_rel(md)}:{lineno}: {m.group(0)}: {why}")
    assert not problems, "\n".join(problems)


# ---- options named in the docs exist ----------------------------------------------------------

@cache
def _options() -> dict[str, frozenset[str]]:
    """Option names per command ("" = the global options)."""
    from typer.main import get_command

    from arrowsmith.cli.app import app

    group = get_command(app)

    def names(command) -> frozenset[str]:
        return frozenset(n for p in command.params
                         for n in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]
                         if n.startswith("-"))

    out = {name: names(c) | names(group) | {"-h", "--help"} for name, c in group.commands.items()}
    out[""] = names(group) | {"-h", "--help"}
    return out


def _invocations(text: str):
    """(command, arguments) for each `arrowsmith CMD …` in code, or inline code starting with CMD."""
    commands = set(_options()) - {""}
    code_lines = [ln for block in FENCE.findall(text) for ln in block.splitlines()]
    spans = INLINE_CODE.findall(FENCE.sub("", text))
    for chunk in [*code_lines, *spans]:
        for segment in re.split(r"\\?\||;|&&", chunk.split(" #", 1)[0]):
            words = segment.split()
            if words and words[0] in commands and chunk in spans:
                yield words[0], words[1:]
                continue
            for i, word in enumerate(words):
                if word == "arrowsmith":
                    rest = words[i + 1:]
                    globals_ = list(itertools.takewhile(lambda w: w.startswith("-"), rest))
                    rest = rest[len(globals_):]
                    if rest and rest[0] in commands:
                        yield rest[0], globals_ + rest[1:]
                    break


@pytest.mark.parametrize("md", MARKDOWN, ids=_rel)
def test_examples_use_only_options_the_command_has(md):
    problems = []
    for command, args in _invocations(md.read_text(encoding="utf-8")):
        for arg in args:
            flag = arg.split("=", 1)[0].rstrip(",.:)")
            if re.fullmatch(r"--?[a-zA-Z][\w-]*", flag) and flag not in _options()[command]:
                problems.append(f"arrowsmith {command} {flag}")
    assert not problems, f"{_rel(md)} names options the command does not have: {sorted(set(problems))}"


def test_every_option_in_the_docs_exists_somewhere():
    everything = frozenset().union(*_options().values(), _benchmark_options())
    problems = []
    for md in MARKDOWN:
        for lineno, line in enumerate(md.read_text(encoding="utf-8").splitlines(), 1):
            if ("benchmarks/" in line and ".py" in line) or "pip install" in line:
                continue  # a benchmark script's own flags, or pip's
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line):
                if flag not in everything:
                    problems.append(f"{_rel(md)}:{lineno}: {flag}")
    assert not problems, "\n".join(problems)


def _benchmark_options() -> set[str]:
    """The flags benchmarks/*.py define (benchmarks/RESULTS.md names them in prose wrapped over lines)."""
    flags: set[str] = set()
    for script in (ROOT / "benchmarks").glob("*.py"):
        flags.update(re.findall(r"add_argument\(\s*\"(--[a-z0-9-]+)\"", script.read_text(encoding="utf-8")))
    return flags


def _envvars() -> dict[str, set[str]]:
    """Environment variable → the options (any command) it sets."""
    from typer.main import get_command

    from arrowsmith.cli.app import app

    group = get_command(app)
    out: dict[str, set[str]] = {}
    for command in [group, *group.commands.values()]:
        for p in command.params:
            if isinstance(getattr(p, "envvar", None), str):
                out.setdefault(p.envvar, set()).update(getattr(p, "opts", []))
    return out


def test_environment_variables_in_the_docs_exist():
    """Every ARROWSMITH_* the docs name is an option's variable or one the code reads, and a row
    that pairs an option with a variable (`--window` | `ARROWSMITH_WINDOW`) pairs the right ones."""
    options = _envvars()
    code = "\n".join(p.read_text(encoding="utf-8") for p in SOURCES if "tests" not in p.parts)
    problems = []
    for md in MARKDOWN:
        for lineno, line in enumerate(md.read_text(encoding="utf-8").splitlines(), 1):
            for var in re.findall(r"\bARROWSMITH_[A-Z][A-Z0-9_]*\b", line):
                if var not in options and f'"{var}"' not in code:
                    problems.append(f"{_rel(md)}:{lineno}: {var} is read nowhere")
            pair = re.match(r"\|\s*`(--[a-z][\w-]*)[^`]*`\s*\|\s*`(ARROWSMITH_[A-Z0-9_]+)`", line)
            if pair and pair.group(2) in options and pair.group(1) not in options[pair.group(2)]:
                flag, var = pair.groups()
                problems.append(f"{_rel(md)}:{lineno}: {var} sets {sorted(options[var])}, not {flag}")
    assert not problems, "\n".join(problems)


# the command a docs page is about (README: the `### arrowsmith CMD` section a line sits in)
PAGE_COMMAND = {"chunk.md": "chunk", "embed.md": "embed", "query.md": "query", "store.md": "index",
                "eval.md": "eval", "compress.md": "compress", "reliability.md": "doctor"}
DEFAULT_CLAIM = re.compile(r"`(--[a-z][\w-]*)(?:[/ ][^`]*)?`\s*\(([^)]*)\)")
TABLE_DEFAULT = re.compile(r"\|\s*`(--[a-z][\w-]*)[^`]*`\s*\|\s*(?:`ARROWSMITH_[A-Z0-9_]+`|—)\s*\|"
                           r"\s*([^|]+?)\s*\|")
LITERAL = re.compile(r"[\w.@-]+|\d+(,\d+)+")


def _numeric(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def _same_default(claimed: str, actual: object) -> bool:
    if isinstance(actual, bool):
        return claimed in ("on", "off", "true", "false") and (claimed in ("on", "true")) == actual
    if isinstance(actual, (int, float)) and _numeric(claimed) is not None:
        return _numeric(claimed) == float(actual)
    return claimed == str(actual)


def test_defaults_named_in_the_docs_match_the_code():
    """`--keep` (default `1d`), `--rrf-k` (60), …: a default the docs state is the command's."""
    from typer.main import get_command

    from arrowsmith.cli.app import app

    commands = get_command(app).commands
    problems, checked = [], 0
    for md in MARKDOWN:
        command = PAGE_COMMAND.get(md.name)
        for lineno, line in enumerate(md.read_text(encoding="utf-8").splitlines(), 1):
            section = re.match(r"###\s+`arrowsmith (\w+)`", line)
            if section and md.name == "README.md":
                command = section.group(1)
            if command not in commands:
                continue
            params = {o: p for p in commands[command].params for o in getattr(p, "opts", [])}
            # a table row `| --opt | ARROWSMITH_OPT | default | … |` (docs/embed.md) claims its default too
            row = TABLE_DEFAULT.match(line)
            for flag, content in DEFAULT_CLAIM.findall(line) + ([row.groups()] if row else []):
                p = params.get(flag)
                if p is None or p.default is None or isinstance(p.default, bool):
                    continue
                # "(default `1h`: only …)", "(`mix`, 0.5)", "(10,000)": the literal items
                content = re.sub(r"^default:?\s*", "", content)
                items = [i.strip(" `") for i in re.split(r",\s+|;\s*|:\s", content)]
                claims = [i for i in items if LITERAL.fullmatch(i)]
                if not claims:
                    continue
                checked += 1
                if not any(_same_default(c, p.default) for c in claims):
                    problems.append(f"{_rel(md)}:{lineno}: {command} {flag} default is {p.default!r}, "
                                    f"the docs say ({content})")
    assert not problems, "\n".join(problems)
    assert checked >= 10  # the pattern still finds the claims it was written for
