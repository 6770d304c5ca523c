"""README.md read as tests check it: its fenced blocks, their markers, and the commands it shows.

A fenced block preceded by `<!-- output: NAME -->` shows what a command prints; a test in
tests/integration/test_readme.py produces it and compares (the convention is described there).
`<!-- measured: benchmarks/SCRIPT.py -->` marks a benchmark's dated figures.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"

MARKER = re.compile(r"^<!--\s*(output|measured):\s*([\w./-]+)\s*-->\s*$")
FENCE = re.compile(r"^```(\S*)\s*$")
INLINE = re.compile(r"`([^`\n]+)`")
SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1"}
# Placeholders in the README stand for what differs from run to run; tests put them in what commands print.
PLACEHOLDERS = {
    "<run-id>": r"[0-9a-f]{32}",
    "<flow-run-id>": r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    "<path>": r"\S+",
    "<rate>": r"[0-9][0-9,]*(\.[0-9]+)?",  # a throughput
}


@dataclass(frozen=True)
class Block:
    lang: str
    lines: tuple[str, ...]
    line_no: int  # of the opening fence, 1-based
    output: str | None = None  # the marker's name, for an output block
    measured: str | None = None  # the benchmark script, for a block of measured figures

    def session(self) -> list[tuple[str, list[str]]]:
        """A console block as (command after `$ `, the lines it prints) pairs."""
        steps: list[tuple[str, list[str]]] = []
        for line in self.lines:
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                assert steps, f"README.md:{self.line_no}: a console block starts with a `$ ` line"
                steps[-1][1].append(line)
        return steps


@dataclass(frozen=True)
class Command:
    program: str  # "trackflow" or "make"
    words: tuple[str, ...]  # the arguments after the program, shell-split, brackets kept
    where: str  # "README.md:LINE" for messages


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, each with the output marker that precedes it (if any)."""
    out, lines, i, pending = [], text.splitlines(), 0, None
    while i < len(lines):
        if m := MARKER.match(lines[i].strip()):
            pending = (m.group(1), m.group(2))
        elif m := FENCE.match(lines[i]):
            start, i = i, i + 1
            body = []
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            kind, name = pending or (None, None)
            out.append(Block(m.group(1), tuple(body), start + 1, **({kind: name} if kind else {})))
            pending = None
        elif lines[i].strip():
            if pending:
                raise ValueError(f"README.md:{i + 1}: the marker {pending[0]}: {pending[1]} must be followed by "
                                 "a fenced block")
        i += 1
    return out


def output_blocks(text: str | None = None) -> dict[str, Block]:
    text = README.read_text() if text is None else text
    found: dict[str, Block] = {}
    for b in blocks(text):
        if b.output:
            assert b.output not in found, f"README.md: output marker {b.output!r} used twice"
            found[b.output] = b
    return found


def _segments(words: list[str]) -> list[list[str]]:
    """Split shell words at operators (`&&`, `|`, `;`, `>`...) outside a synopsis's [brackets]."""
    out, cur, depth, skip_next = [], [], 0, False
    for w in words:
        if skip_next:  # a redirection's target
            skip_next = False
            continue
        if depth == 0 and w in SHELL_OPERATORS:
            if cur:
                out.append(cur)
            cur = []
            skip_next = w in (">", ">>", "<", "2>")
            continue
        depth += w.count("[") - w.count("]")
        cur.append(w)
    if cur:
        out.append(cur)
    return out


def _commands_in(line: str, where: str, strict: bool) -> list[Command]:
    """The trackflow and make commands on one shell line (comments dropped; `$ ` prompts and VAR=value prefixes too)."""
    line = line.strip().removeprefix("$ ")
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        if strict:
            raise ValueError(f"{where}: not a valid shell line: {line!r}") from None
        return []
    found = []
    for seg in _segments(words):
        while seg and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", seg[0]):  # environment prefixes
            seg = seg[1:]
        if seg and seg[0].rsplit("/", 1)[-1] in ("trackflow", "make"):
            found.append(Command(seg[0].rsplit("/", 1)[-1], tuple(seg[1:]), where))
    return found


def _open_quote(line: str) -> bool:
    try:
        shlex.split(line, comments=True)
    except ValueError:
        return True
    return False


def commands(text: str | None = None) -> list[Command]:
    """Every trackflow/make command the text shows: in shell blocks, on `$ ` lines of other blocks, in inline code."""
    text = README.read_text() if text is None else text
    found: list[Command] = []
    lines = text.splitlines()
    in_block, lang, i = False, "", 0
    while i < len(lines):
        line = lines[i]
        where = f"README.md:{i + 1}"
        if m := FENCE.match(line):
            if in_block and line.strip() == "```":
                in_block = False
            elif not in_block:
                in_block, lang = True, m.group(1)
            i += 1
            continue
        if in_block:
            joined = line
            while i + 1 < len(lines) and not lines[i + 1].startswith("```"):
                if joined.rstrip().endswith("\\"):  # a line continuation
                    joined = joined.rstrip()[:-1] + " "
                elif lang in ("bash", "sh", "shell") and _open_quote(joined):
                    joined += "\n"  # a quoted string over several lines
                else:
                    break
                i += 1
                joined += lines[i]
            if lang in ("bash", "sh", "shell"):
                found += _commands_in(joined, where, strict=True)
            elif joined.startswith("$ "):
                found += _commands_in(joined, where, strict=True)
        else:
            for span in INLINE.findall(line):
                if re.match(r"(\S*/)?(trackflow|make)\s+[a-z\-]", span) and "<" not in span:
                    found += _commands_in(span, where, strict=False)
        i += 1
    return found


def inline_options(text: str | None = None) -> list[tuple[str, str]]:
    """(README.md:LINE, --option) for each option named in inline code in the prose (outside fenced blocks)."""
    text = README.read_text() if text is None else text
    found, inside = [], False
    for i, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            for span in INLINE.findall(line):
                found += [(f"README.md:{i}", o) for o in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", span)]
    return found


def makefile_targets(makefile: Path = REPO / "Makefile") -> tuple[set[str], set[str]]:
    """(targets, variables) that the Makefile defines."""
    text = makefile.read_text()
    targets = set()
    for m in re.finditer(r"^([A-Za-z0-9_.\- ]+):(?!=)", text, re.M):
        targets.update(t for t in m.group(1).split() if not t.startswith("."))
    variables = set(re.findall(r"^(?:export\s+)?([A-Z_][A-Z0-9_]*)\s*[?:+]?=", text, re.M))
    return targets, variables


def matches(expected: list[str], got: list[str]) -> bool:
    """`got` equals `expected` line by line, each README placeholder standing for what it names."""
    return len(expected) == len(got) and all(re.fullmatch(line_pattern(e), g) for e, g in zip(expected, got))


def appears_in(expected: list[str], got: list[str]) -> bool:
    """`expected` equals some contiguous run of `got`'s lines (placeholders as in `matches`); empty always does."""
    return not expected or any(matches(expected, got[i:i + len(expected)]) for i in range(len(got)))


def line_pattern(line: str) -> str:
    parts = re.split("(" + "|".join(map(re.escape, PLACEHOLDERS)) + ")", line.rstrip())
    return "".join(PLACEHOLDERS.get(p, re.escape(p)) for p in parts)
