"""The documentation cannot rot: README.md and the site under docs/.

- `test_python_examples_run`: every fenced ```python block of a page runs, the blocks
  of one page in order and in one namespace, in a temporary working directory whose
  `saved_models/` is the repository's. Substitutions, all listed in `SUBSTITUTIONS`
  and printed when applied: `epochs=N` becomes `epochs=1` (a 30-epoch training as an
  example, 1 epoch in the test). README blocks may use `x` (8 binarized test digits),
  `dataset` and `test_dataset` (small `tf.data` pipelines of (images, labels)), which
  `readme_prelude` defines; pages under docs/ define what they use.
  Markers, an HTML comment on the line(s) before the fence:
  `<!-- test-fixture: runs/mnist -->` puts a small trained run at that path first (the
  session's `tiny_run`, standing in for the Quickstart's run);
  `<!-- no-test: REASON -->` skips a block that cannot run here (a TPU, a running
  server). Keep those few.
- `test_cli_commands_parse`: every `vae-tf` command line in a non-Python code block, and
  every inline code span starting with `vae-tf `, parses with the CLI's own argparse
  parser (`vae_tf.cli.build_parser`), so a renamed or removed flag fails here. Synopsis
  forms are allowed: `[...]` marks optional parts, `a|b` lists alternatives (the first
  is checked), `...` is dropped, and an UPPERCASE word is a placeholder for a value of
  its flag's type (a command whose subcommand is a placeholder is not checked).
- `test_help_examples_are_documented`: the "examples:" that end `vae-tf --help` and every
  `vae-tf COMMAND --help` (at least one each) are command lines of README.md or docs/*.md,
  token for token (comments aside), and parse; `vae-tf --help`'s "command line at a
  glance" is the README's block.
- `test_site_builds_strict`: `mkdocs build --strict` (no broken link or anchor, every
  page in the nav, no unexpected docstring warning) into a temporary directory, and the
  built pages load nothing from another host; skipped when mkdocs is not installed.
- `test_benchmark_renderers` / `test_results_pages_show_the_json`: the results pages are
  rendered from benchmarks/*.json (docs/hooks.py), never copied by hand.
- `test_layout_page_matches_tree`: docs/layout.md lists every module and web source file,
  and nothing that does not exist.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def _id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# ---------------------------------------------------------------------------------------
# Markdown: fenced blocks with their markers, inline code spans

FENCE_OPEN = re.compile(r"^(?P<indent>[ ]{0,3})(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
MARKER = re.compile(r"^<!--\s*(?P<key>no-test|test-fixture)\s*:\s*(?P<value>.*?)\s*-->\s*$")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the first line of the body
    lang: str
    body: str
    markers: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{_id(self.path)}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        fence, start = m.group("fence"), i + 1
        end = start
        while end < len(lines) and not re.match(rf"^[ ]{{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", lines[end]):
            end += 1
        markers, j = {}, i - 1
        while j >= 0 and (not lines[j].strip() or MARKER.match(lines[j].strip())):
            mm = MARKER.match(lines[j].strip())
            if mm:
                markers[mm.group("key")] = mm.group("value")
            j -= 1
        indent = len(m.group("indent"))
        body = "\n".join(line[indent:] if line[:indent].strip() == "" else line for line in lines[start:end])
        blocks.append(Block(path, start + 1, m.group("info").strip().split(" ")[0].lower(), body, markers))
        i = end + 1
    return blocks


def prose(path: Path) -> str:
    """The page without its fenced blocks (line numbers kept)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for block in fenced_blocks(path):
        for k in range(block.line - 2, block.line + block.body.count("\n") + 1):
            if 0 <= k < len(lines):
                lines[k] = ""
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# (a) Python examples

# (pattern, replacement, why): applied to every Python block, each use printed.
SUBSTITUTIONS = [
    (re.compile(r"\bepochs=\d+"), "epochs=1", "examples train for 1 epoch in the test"),
]


def substitute(code: str, where: str) -> str:
    for pattern, replacement, why in SUBSTITUTIONS:
        code, n = pattern.subn(replacement, code)
        if n:
            print(f"{where}: {pattern.pattern} -> {replacement} ({n}x; {why})")
    return code


def readme_prelude() -> dict:
    """The names the README's examples use without defining them."""
    import tensorflow as tf

    from vae_tf import load_splits
    from vae_tf.data import eval_images

    splits = load_splits("bundled")
    x_train = eval_images(splits.train_images[:512], "dynamic")
    x_test = eval_images(splits.test_images[:256], "dynamic")
    return {
        "x": x_test[:8],
        "dataset": tf.data.Dataset.from_tensor_slices((x_train, splits.train_labels[:512])).batch(128),
        "test_dataset": tf.data.Dataset.from_tensor_slices((x_test, splits.test_labels[:256])).batch(128),
    }


PYTHON_DOCS = [p for p in doc_files() if any(b.lang in ("python", "py") for b in fenced_blocks(p))]


@pytest.mark.parametrize("doc", PYTHON_DOCS, ids=_id)
def test_python_examples_run(doc, tmp_path, monkeypatch, request):
    blocks = [b for b in fenced_blocks(doc) if b.lang in ("python", "py")]
    for b in blocks:
        if "no-test" in b.markers:
            assert b.markers["no-test"], f"{b.where}: `<!-- no-test: REASON -->` needs a reason"
            print(f"{b.where}: not run ({b.markers['no-test']})")
    runnable = [b for b in blocks if "no-test" not in b.markers]
    if not runnable:
        pytest.skip("every Python block of this page is marked no-test")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "saved_models").symlink_to(ROOT / "saved_models")
    namespace = {"__name__": "__docs_example__"}
    if doc.name == "README.md":
        namespace.update(readme_prelude())
    for b in runnable:
        if "test-fixture" in b.markers:
            target = tmp_path / b.markers["test-fixture"]
            if not target.exists():
                shutil.copytree(request.getfixturevalue("tiny_run"), target)
        # Padded so that a traceback's line numbers are the page's.
        code = "\n" * (b.line - 1) + substitute(b.body, b.where)
        try:
            exec(compile(code, str(doc), "exec"), namespace)
        except Exception as err:  # noqa: BLE001 - any failure of an example is the test's failure
            pytest.fail(f"{b.where}: the example raised {type(err).__name__}: {err}\n\n{b.body}")


# ---------------------------------------------------------------------------------------
# (b) `vae-tf` command lines

PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(,[A-Z][A-Z0-9_]*)*$")
INLINE = re.compile(r"(?<!`)`(?P<cmd>vae-tf [^`]+)`(?!`)")
SEPARATORS = {"&&", "||", ";", "|"}


def command_lines(path: Path) -> list[tuple[str, str, bool]]:
    """(where, command line, complete) of every `vae-tf` command on the page: complete
    for a command line in a code block (unless it elides with `...`), not for an inline
    span, which may name a command and a flag without the arguments it requires."""
    found = []
    for b in fenced_blocks(path):
        if b.lang in ("python", "py", "json", "javascript", "js"):
            continue
        logical, first = "", None
        for k, line in enumerate(b.body.splitlines()):
            first = first if logical else b.line + k
            text = line.strip()
            if text.startswith("$ "):
                text = text[2:]
            logical += text
            if logical.endswith("\\"):
                logical = logical[:-1] + " "
                continue
            if re.search(r"(^|\s|=|&&\s*)vae-tf\s", logical + " ") or logical.startswith("vae-tf"):
                found.append((f"{_id(path)}:{first}", logical, "..." not in logical))
            logical = ""
    text = prose(path)
    for m in INLINE.finditer(text):
        found.append((f"{_id(path)}:{text.count(chr(10), 0, m.start()) + 1}", " ".join(m.group("cmd").split()), False))
    return found


def _segments(line: str) -> list[list[str]]:
    tokens = shlex.split(line, comments=True)
    segments, current = [], []
    for token in tokens:
        if token in SEPARATORS:
            segments.append(current)
            current = []
        else:
            current.append(token)
    segments.append(current)
    out = []
    for seg in segments:
        while seg and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", seg[0]):
            seg = seg[1:]  # environment assignments before the command
        if seg and seg[0] == "vae-tf":
            out.append(seg)
    return out


def _synopsis(tokens: list[str]) -> list[str]:
    out = []
    for token in tokens:
        token = token.strip("[]")
        if token in ("", "...") or token.endswith("..."):
            continue
        if "|" in token and "://" not in token:
            token = token.split("|")[0]
        out.append(token)
    return out


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _fill_placeholder(action: argparse.Action | None, token: str) -> str:
    """A value the flag accepts, for an UPPERCASE placeholder."""
    if action is None:
        return token
    candidates = ([str(c) for c in action.choices] if action.choices else []) + ["1", "0.5", "1,1", token]
    for value in candidates:
        try:
            converted = action.type(value) if callable(action.type) else value
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            continue
        if not action.choices or converted in action.choices:
            return value
    return token


def check_command(parser: argparse.ArgumentParser, tokens: list[str], *, lenient: bool = False) -> str | None:
    """None when `tokens` (starting with vae-tf) parse; else what is wrong. Skips
    (returns None for) a synopsis whose subcommand is a placeholder. Flags must be
    spelled in full (argparse would take an abbreviation). `lenient`: a flag named
    without its value (inline prose, "`vae-tf export --out`") gets a placeholder."""
    args = _synopsis(tokens[1:])
    subcommand = next((t for t in args if not t.startswith("-")), None)
    if subcommand is None or PLACEHOLDER.match(subcommand):
        if subcommand is None and "--help" not in args and "-h" not in args:
            return "no subcommand"
        return None
    sub = _subparsers(parser).get(subcommand)
    options = {**_options(parser), **(_options(sub) if sub else {})}
    filled = []
    for k, token in enumerate(args):
        flag = token.split("=", 1)[0]
        if flag.startswith("--") and flag not in options:
            return f"unknown flag {flag} (flags must be spelled in full)"
        previous = filled[-1] if filled else None
        if PLACEHOLDER.match(token):
            action = options.get(previous) if previous and previous.startswith("-") else None
            token = _fill_placeholder(action, token)
        filled.append(token)
        action = options.get(token)
        needs_value = action is not None and action.nargs is None and not isinstance(
            action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction,
                     argparse._StoreConstAction, argparse._CountAction))
        if lenient and needs_value and (k + 1 == len(args) or args[k + 1].startswith("-")):
            filled.append(_fill_placeholder(action, "VALUE"))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(filled)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else f"exit {exit_.code}"
    return None


def lenient_parser() -> argparse.ArgumentParser:
    """The CLI's parser with no argument required: for commands named in prose."""
    from vae_tf.cli import build_parser

    parser = build_parser()
    for p in [parser, *_subparsers(parser).values()]:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            action.required = False
            if not action.option_strings and action.nargs is None:
                action.nargs = "?"
    return parser


COMMAND_DOCS = [p for p in doc_files() if command_lines(p)]


@pytest.mark.parametrize("doc", COMMAND_DOCS, ids=_id)
def test_cli_commands_parse(doc):
    from vae_tf.cli import build_parser

    strict, lenient = build_parser(), lenient_parser()
    failures, checked = [], 0
    for where, line, complete in command_lines(doc):
        for tokens in _segments(line):
            checked += 1
            problem = check_command(strict, tokens) if complete else check_command(lenient, tokens, lenient=True)
            if problem:
                failures.append(f"{where}: {' '.join(tokens)}\n    -> {problem}")
    assert checked, f"{_id(doc)}: no vae-tf command found"
    assert not failures, "vae-tf commands in the docs that the CLI rejects:\n" + "\n".join(failures)


def test_command_check_rejects_a_wrong_flag():
    from vae_tf.cli import build_parser

    parser = build_parser()
    assert check_command(parser, ["vae-tf", "train", "--out", "runs/x", "--epochs", "3"]) is None
    assert check_command(parser, shlex.split("vae-tf train [--architecture mlp|conv|resnet] --out RUN_DIR --epochs N")) is None
    assert "unknown flag --epoch" in check_command(parser, ["vae-tf", "train", "--out", "x", "--epoch", "3"])
    assert "unrecognized arguments: extra" in check_command(parser, ["vae-tf", "sample", "RUN", "extra", "--out", "s.png"])
    assert "invalid choice" in check_command(parser, ["vae-tf", "train", "--out", "x", "--prior", "gauss"])
    assert check_command(parser, ["vae-tf", "evaluate"]) is not None  # run_dir is required
    assert check_command(parser, ["vae-tf", "explore", "DIR", "--port", "eighty"]) is not None
    lenient = lenient_parser()
    assert check_command(lenient, ["vae-tf", "evaluate", "--ood"], lenient=True) is None  # named in prose
    assert check_command(lenient, ["vae-tf", "export", "--out"], lenient=True) is None
    assert "unknown flag --odd" in check_command(lenient, ["vae-tf", "evaluate", "--odd"], lenient=True)


def help_text(argv: list[str]) -> str:
    """What `vae-tf ARGV --help` prints."""
    from vae_tf.cli import build_parser

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return out.getvalue()


def help_section(text: str, header: str) -> list[str]:
    """The lines of the section `header` (a line of its own, e.g. "examples:") of a --help
    text, less their two-space indent; [] when there is no such section."""
    lines = text.splitlines()
    if header not in lines:
        return []
    section = []
    for line in lines[lines.index(header) + 1:]:
        if not line.startswith("  "):
            break
        section.append(line[2:])
    return section


def documented_commands() -> dict[tuple[str, ...], str]:
    """Every `vae-tf` command of README.md and docs/*.md, as its tokens (comments and
    environment assignments aside), with where it is."""
    found = {}
    for doc in doc_files():
        for where, line, _ in command_lines(doc):
            for tokens in _segments(line):
                found.setdefault(tuple(tokens), where)
    return found


def test_help_examples_are_documented():
    from vae_tf.cli import build_parser

    parser, documented = build_parser(), documented_commands()
    failures = []
    for command in ["", *_subparsers(parser)]:
        argv = [command] if command else []
        prog = " ".join(["vae-tf", *argv])
        examples = help_section(help_text(argv), "examples:")
        if not examples:
            failures.append(f"`{prog} --help` shows no examples")
        for line in examples:
            tokens = shlex.split(line, comments=True)
            if command and tokens[:2] != ["vae-tf", command]:
                failures.append(f"`{prog} --help`: {line!r} is not a `{prog}` command")
            if _synopsis(tokens) != tokens or any(PLACEHOLDER.match(t) for t in tokens):
                failures.append(f"`{prog} --help`: {line!r} is a synopsis, not a command a user runs")
            if tuple(tokens) not in documented:
                failures.append(f"`{prog} --help`: {line!r} is in neither README.md nor docs/*.md")
            problem = check_command(parser, tokens)
            if problem:
                failures.append(f"`{prog} --help`: {line!r} does not parse: {problem}")
    assert not failures, "examples of --help that do not match the docs:\n" + "\n".join(failures)


def test_top_level_help_reads_like_the_readme():
    from vae_tf.cli import build_parser

    glance = help_section(help_text([]), "command line at a glance:")
    assert glance, "`vae-tf --help` has no \"command line at a glance:\" section"
    readme = [b.body for b in fenced_blocks(ROOT / "README.md")]
    assert "\n".join(glance) in readme, (
        "`vae-tf --help`'s \"command line at a glance\" differs from the README's block:\n" + "\n".join(glance))
    named = {line.split()[1] for line in glance if line.startswith("vae-tf ")}
    assert named == set(_subparsers(build_parser())), named


# ---------------------------------------------------------------------------------------
# (c) The site, and the pages generated at build time


def _hooks():
    spec = importlib.util.spec_from_file_location("vae_tf_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_renderers():
    hooks = _hooks()
    names = hooks.benchmark_files()
    assert "results.json" in names
    for name in names:
        text = hooks.render(name)
        assert f"benchmarks/{name}" in text and "|" in text, name
    results = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    headline = hooks.render("results.json", "headline")
    assert f"{results['evaluate']['by_split']['test']['iwae_nll']:.2f}" in headline
    assert f"{results['best']['by_split']['validation']['iwae_nll']:.2f}" in headline
    generic = hooks.render_generic({"a": 1.5, "rows": [{"x": 1, "y": "two"}], "load_before": [0.1, 0.2, 0.3]})
    assert "`a`" in generic and "two" in generic and "0.1" in generic
    with pytest.raises(FileNotFoundError):
        hooks.render("no_such_benchmark.json")


def test_cli_reference_lists_every_command():
    from vae_tf.cli import build_parser

    text = _hooks().cli_reference()
    for name, sub in _subparsers(build_parser()).items():
        assert f"## `vae-tf {name}`" in text
        for action in sub._actions:
            for option in action.option_strings:
                assert option in text, (name, option)


def _mkdocs_ready():
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[docs]')"
    return None


EXTERNAL = re.compile(r"<(?:script|img|iframe)[^>]*\ssrc=\"(https?:)?//|<link(?![^>]*rel=\"(?:canonical|alternate)\")[^>]*\shref=\"(https?:)?//")


@pytest.mark.skipif(_mkdocs_ready() is not None, reason=_mkdocs_ready() or "")
def test_site_builds_strict(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site), "--config-file",
         str(ROOT / "mkdocs.yml")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    pages = list(site.rglob("*.html"))
    assert len(pages) > 20
    external = [f"{p.relative_to(site)}: {m.group(0)}" for p in pages for m in EXTERNAL.finditer(p.read_text())]
    assert not external, "pages that load from another host (the site must work offline):\n" + "\n".join(external)
    results = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    index = (site / "results" / "index.html").read_text()
    assert f"{results['evaluate']['by_split']['test']['iwae_nll']:.2f}" in index
    serving = json.loads((ROOT / "benchmarks" / "serving_load.json").read_text())
    assert f"{serving['latency_ms']['p99']:.2f}" in (site / "results" / "serving" / "index.html").read_text()
    assert "vae-tf train" in (site / "cli" / "index.html").read_text()
    assert "export_run" in (site / "api" / "export" / "index.html").read_text()


# ---------------------------------------------------------------------------------------
# Project layout


def layout_tree() -> set[str]:
    """The paths the tree in docs/layout.md lists (directories end in /)."""
    block = next(b for b in fenced_blocks(DOCS / "layout.md") if b.body.startswith("vae_tf/"))
    paths, stack = set(), []
    for line in block.body.splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        stack = stack[:depth] + [name]
        paths.add("".join(stack))
    return paths


def test_layout_page_matches_tree():
    listed = layout_tree()
    for path in listed:
        assert (ROOT / path).exists(), f"docs/layout.md lists {path}, which does not exist"
    actual = {p.relative_to(ROOT).as_posix() for p in ROOT.glob("vae_tf/**/*.py")}
    actual |= {p.relative_to(ROOT).as_posix() for p in ROOT.glob("export/*.py")}
    actual |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "web" / "src").rglob("*") if p.is_file()}
    actual |= {"web/build.mjs"}
    missing = sorted(actual - listed)
    assert not missing, f"docs/layout.md does not list: {missing}"
