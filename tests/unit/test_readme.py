"""Every `trackflow ...` and `make ...` command README.md shows is one the real parser and Makefile accept.

Checked against `cli.main.build_parser()` (abbreviations off, so a renamed option is never
accepted as a prefix of another): the subcommand exists, every option is an option of it,
every concrete value parses (type and choices). A synopsis (`[--opt VALUE]`, `a|b`, `...`,
CAPITALISED placeholders) is checked option by option, and a value shown in [brackets] must be
the option's default. A command without any of those is parsed whole, as the shell would pass it.
`make TARGET [VAR=value]` must name a Makefile target and variable. What the commands print is
checked in tests/integration/test_readme.py.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re

import pytest

from cli.main import build_parser
from tests.helpers import readme
from trackflow import config as c

# Where a generated option's default lives (its argparse default is SUPPRESS: the config fills it in).
CONFIGS = {
    ("train",): [c.TrainConfig],
    ("sweep",): [c.SweepConfig, c.TrainConfig],
    ("infer", "text"): [c.TextInferConfig],
    ("infer", "audio"): [c.AudioInferConfig],
    ("score",): [c.ScoreConfig],
    ("runs", "prune"): [c.PruneConfig],
}
PLACEHOLDER = re.compile(r"\.\.\.|\b[A-Z][A-Z0-9_]*\b")  # PATH, N, OUT_DIR, tcp://HOST:PORT, a,b,...


class Refused(Exception):
    pass


def _parsers(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


@pytest.fixture(scope="module")
def tree() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    parser = build_parser()
    parsers = dict(_parsers(parser))
    for p in parsers.values():
        p.allow_abbrev = False  # `--optim` must not pass for `--optimizer`

        def error(message, p=p):
            raise Refused(f"{p.prog}: {message}")

        p.error = error
    return parsers


def _is_synopsis(words) -> bool:
    return any("[" in w or "]" in w or "|" in w or "..." in w for w in words)


def _default(path, action):
    if action.default is not argparse.SUPPRESS:
        return action.default
    for model in CONFIGS.get(path, []):
        if action.dest in model.model_fields:
            return model.model_fields[action.dest].default
    raise AssertionError(f"no config known for `trackflow {' '.join(path)}`: add it to CONFIGS")


def check_trackflow(tree, words: tuple[str, ...]) -> None:
    """Raise AssertionError naming what the README gets wrong in `trackflow WORDS`."""
    path: tuple[str, ...] = ()
    rest = list(words)
    while rest and not rest[0].startswith("-") and any(k[:len(path) + 1] == path + (rest[0].split("|")[0],)
                                                       for k in tree if len(k) > len(path)):
        for alt in rest[0].split("|"):  # `infer text|audio`
            assert path + (alt,) in tree, f"`trackflow {' '.join(path + (alt,))}`: no such command"
        path += (rest.pop(0).split("|")[0],)
    if not path and rest and not rest[0].startswith("-"):
        raise AssertionError(f"`trackflow {rest[0]}`: no such command")
    parser = tree[path]
    if parser._subparsers is not None and not rest:
        raise AssertionError(f"`trackflow {' '.join(path)}` needs a subcommand")
    if not _is_synopsis(words):
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                parser.parse_args(rest)
        except Refused as exc:
            raise AssertionError(str(exc)) from None
        except SystemExit as exc:  # --help, --version
            assert exc.code == 0, exc
        return
    # A synopsis: option by option; a value in [brackets] (not prose) is the option's default.
    depth, prose, i = 0, False, 0
    while i < len(rest):
        word = rest[i]
        opening = word.startswith("[")
        depth += word.count("[")
        bare = word.strip("[]")
        if opening and depth == 1:
            prose = not bare.startswith("-")
        if bare.startswith("--") or re.fullmatch(r"-[a-z]", bare):
            action = parser._option_string_actions.get(bare)
            assert action is not None, f"`trackflow {' '.join(path)}` has no option {bare}"
            if action.nargs != 0 and i + 1 < len(rest) and rest[i + 1] != "|" and not rest[i + 1].startswith("--"):
                i += 1
                value_word = rest[i]
                value = value_word.rstrip("]")
                if not PLACEHOLDER.search(value):
                    alternatives = value.split("|") if action.choices else [value]
                    for alt in alternatives:
                        try:
                            parsed = parser._get_values(action, [alt])
                        except argparse.ArgumentError as exc:
                            raise AssertionError(f"`trackflow {' '.join(path)} {bare} {alt}`: {exc}") from None
                        if depth and not prose and alt == alternatives[0]:
                            default = _default(path, action)
                            assert parsed == default, (f"`trackflow {' '.join(path)}` shows [{bare} {value}], "
                                                       f"but its default is {default!r}")
                depth -= value_word.count("]")
        depth -= word.count("]")
        i += 1


def check_make(words: tuple[str, ...]) -> None:
    targets, variables = readme.makefile_targets()
    names = [w for w in words if not w.startswith("-")]
    assert names, "`make` alone: name the target"
    for w in names:
        if "=" in w:
            var = w.split("=", 1)[0]
            assert var in variables, f"`make {' '.join(words)}`: the Makefile has no variable {var}"
        else:
            assert w in targets, f"`make {' '.join(words)}`: the Makefile has no target {w!r}"


def check(tree, command: readme.Command) -> None:
    try:
        (check_make(command.words) if command.program == "make" else check_trackflow(tree, command.words))
    except AssertionError as exc:
        raise AssertionError(f"{command.where}: {exc}") from None


README_COMMANDS = readme.commands()


def test_the_readme_shows_commands_of_every_kind():
    shown = {(c.program, *c.words[:1]) for c in README_COMMANDS}
    assert {("trackflow", "train"), ("trackflow", "sweep"), ("trackflow", "infer"), ("trackflow", "score"),
            ("trackflow", "runs"), ("make", "run"), ("make", "test")} <= shown


@pytest.mark.parametrize("command", README_COMMANDS, ids=lambda c: f"{c.where} {c.program} {' '.join(c.words)}"[:90])
def test_each_command_the_readme_shows_parses(tree, command):
    check(tree, command)


BAD = """
```bash
trackflow train --learning-rate 0.1
trackflow train --optim adam
trackflow sweep --lrs abc
trackflow runs lst
trackflow trian --epochs 3
trackflow train --optimizer rmsprop
trackflow infer text inbox
trackflow train [--epochs 12] [--seed 42]
trackflow sweep [--runner fast|auto]
trackflow sweep [--optimizers adam,adamw]
FOO=1 trackflow score IN --out OUT [--batch-row N]
cat x | trackflow train --n-sample 10 > log.txt
trackflow train \\
    --epocs 3
make tests
make server PREFECT_PRT=4311
```
Inline: `trackflow infer text|video`, `make run/lint`.
"""


@pytest.mark.parametrize("command", readme.commands(BAD), ids=lambda c: f"{c.program} {' '.join(c.words)}"[:60])
def test_a_wrong_command_is_caught(tree, command):
    with pytest.raises(AssertionError):
        check(tree, command)


def test_every_wrong_command_is_found():
    assert len(readme.commands(BAD)) == 17


GOOD = """
```bash
export X=1 && trackflow train --epochs 3 --data t.csv --target y | tee log
trackflow train [--epochs 10] [--optimizer adam|adamw] [--no-promote]
trackflow infer text IN_DIR --out OUT_DIR [--greedy | --do-sample --temperature 1 --top-k 50]
make server PREFECT_PORT=4311 &
```
"""


@pytest.mark.parametrize("command", readme.commands(GOOD), ids=lambda c: f"{c.program} {' '.join(c.words)}"[:60])
def test_a_right_command_passes(tree, command):
    check(tree, command)


def test_output_markers_and_placeholders():
    text = "<!-- output: a -->\n\n```\nMLflow run: <run-id>\n```\n```\nnot marked\n```\n"
    assert {k: v.lines for k, v in readme.output_blocks(text).items()} == {"a": ("MLflow run: <run-id>",)}
    assert readme.matches(["MLflow run: <run-id>"], ["MLflow run: 383b91d8c3b1437bb599e9b1728eeda0"])
    assert not readme.matches(["MLflow run: <run-id>"], ["MLflow run: 383b91d8 (experiment 'x')"])
    assert not readme.matches(["  test_f1  0.9137"], ["  test_f1  0.9138"])
    with pytest.raises(ValueError, match="must be followed by a fenced block"):
        readme.blocks("<!-- output: a -->\nprose\n```\nx\n```\n")


def check_blocks(text: str) -> None:
    """Output shown in the text carries a marker, so that a test checks it (or, for figures, names its benchmark)."""
    for block in readme.blocks(text):
        where = f"README.md:{block.line_no}"
        if block.measured:
            assert (readme.REPO / block.measured).is_file(), f"{where}: no benchmark {block.measured}"
        elif block.lang == "console":
            assert block.output and block.session(), f"{where}: a console session shows output: mark it"
        elif not block.output:
            assert block.lang in ("bash", "text"), (f"{where}: a block of output needs `<!-- output: NAME -->` "
                                                    "(and a test), a block of commands ```bash")


def test_every_block_is_commands_a_checked_output_or_a_benchmarks_figures():
    check_blocks(readme.README.read_text())


@pytest.mark.parametrize("text", [
    "```\nTest metrics (2 classes: 0, 1):\n```\n",  # plain output, unmarked
    "```console\n$ trackflow train\nMLflow run: x\n```\n",  # a session, unmarked
    "<!-- measured: benchmarks/bench_nothing.py -->\n```\n1 s\n```\n",  # no such benchmark
])
def test_unmarked_output_is_caught(text):
    with pytest.raises(AssertionError):
        check_blocks(text)


def test_the_readme_names_every_target_make_help_lists():
    listed = re.findall(r"^([a-zA-Z_-]+):.*## ", (readme.REPO / "Makefile").read_text(), re.M)
    shown = {c.words[0] for c in README_COMMANDS if c.program == "make" and c.words}
    assert listed and set(listed) - {"help"} <= shown, f"README.md never shows make {sorted(set(listed) - shown)}"


def _all_options(tree) -> set[str]:
    return {o for p in tree.values() for o in p._option_string_actions}


def test_every_option_the_prose_names_is_an_option_of_some_command(tree):
    options = readme.inline_options()
    assert len(options) > 30  # the README's prose names options in `code`
    unknown = [(where, o) for where, o in options if o not in _all_options(tree)]
    assert not unknown, f"the README names options no trackflow command has: {unknown}"


def test_a_renamed_option_in_the_prose_is_caught(tree):
    text = "Use `--promote-alias` and `--thousand ','`.\n```bash\n--not-prose\n```\n"
    assert [o for _, o in readme.inline_options(text) if o not in _all_options(tree)] == ["--thousand"]
