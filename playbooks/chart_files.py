"""The files helm loads from a local chart directory, and a digest of them.

`gateway.up --chart DIR` records the digest in the release it installs, so that a second
`up` with the same files and values can leave the release alone. The file list follows
helm's own directory loader (pkg/chart/v2/loader/directory.go, pkg/ignore/rules.go): the
`.helmignore` rules, evaluated exactly as helm evaluates them, plus helm's default rule
`templates/.?*`; symbolic links are followed. Should the two ever disagree, the digest
errs on the side of an extra upgrade: a `.helmignore` that helm would refuse is not
applied at all, so every file counts.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HELMIGNORE = ".helmignore"
DEFAULT_RULES = ("templates/.?*",)  # helm's AddDefaults: dotfiles in templates/
_BOM = "\ufeff"


class BadPattern(ValueError):
    """A pattern Go's filepath.Match rejects (helm then refuses the chart)."""


def glob_regex(pattern: str) -> re.Pattern:
    """A regex matching as Go's filepath.Match does on Unix: `*` and `?` stop at `/`,
    classes `[...]`/`[^...]` with ranges, `\\` escapes."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            i += 1
            if i == n:
                raise BadPattern(pattern)
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            i, cls = _char_class(pattern, i + 1)
            out.append(cls)
            continue
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _char_class(pattern: str, i: int) -> tuple[int, str]:
    """Parse a class after its `[`; returns the index after its `]` and the regex class."""
    n = len(pattern)
    negate = i < n and pattern[i] == "^"
    i += negate
    items: list[str] = []

    def char() -> str:
        nonlocal i
        if i >= n or pattern[i] in "-]":
            raise BadPattern(pattern)
        if pattern[i] == "\\":
            i += 1
            if i >= n:
                raise BadPattern(pattern)
        c = pattern[i]
        i += 1
        return c

    count = 0
    while True:
        if i < n and pattern[i] == "]" and count:
            if not items:  # only empty ranges such as z-a: nothing (or, negated, anything) matches
                return i + 1, "." if negate else "(?!)"
            return i + 1, f"[{'^' if negate else ''}{''.join(items)}]"
        lo = char()
        count += 1
        if i < n and pattern[i] == "-":
            i += 1
            hi = char()
            if lo <= hi:
                items.append(f"{re.escape(lo)}-{re.escape(hi)}")
        else:
            items.append(re.escape(lo))


@dataclass(frozen=True)
class Rule:
    raw: str
    negate: bool
    must_dir: bool
    match: Callable[[str], bool]


def parse_rule(line: str) -> Rule | None:
    """One `.helmignore` line as helm's parseRule reads it; None for blanks and comments."""
    rule = line.strip()
    if not rule or rule.startswith("#"):
        return None
    if "**" in rule:
        raise BadPattern(f"{rule}: double-star (**) syntax is not supported")
    glob_regex(rule)  # helm compiles the raw rule first, `!` and all
    raw, negate = rule, rule.startswith("!")
    if negate:
        rule = rule[1:]
    must_dir = rule.endswith("/")
    if must_dir:
        rule = rule[:-1]
    if rule.startswith("/"):
        regex = glob_regex(rule[1:])
        return Rule(raw, negate, must_dir, lambda path: regex.fullmatch(path) is not None)
    regex = glob_regex(rule)
    if "/" in rule:
        return Rule(raw, negate, must_dir, lambda path: regex.fullmatch(path) is not None)
    # No slash: only the last element of the path is matched.
    return Rule(raw, negate, must_dir, lambda path: regex.fullmatch(path.rpartition("/")[2]) is not None)


def parse_rules(text: str) -> list[Rule]:
    rules = [parse_rule(line) for line in text.removeprefix(_BOM).splitlines()]
    return [rule for rule in rules if rule is not None]


def ignored(rules: list[Rule], path: str, is_dir: bool) -> bool:
    """helm's Rules.Ignore, rule for rule (a negated rule that does not match ignores the path)."""
    for rule in rules:
        if rule.negate:
            if rule.must_dir and not is_dir:
                return True
            if not rule.match(path):
                return True
            continue
        if rule.must_dir and not is_dir:
            continue
        if rule.match(path):
            return True
    return False


def chart_rules(top: Path) -> list[Rule]:
    """The chart's `.helmignore` rules then helm's defaults; only the defaults if helm would refuse the file."""
    defaults = parse_rules("\n".join(DEFAULT_RULES))
    path = top / HELMIGNORE
    if not path.is_file():
        return defaults
    try:
        return parse_rules(path.read_text(errors="surrogateescape")) + defaults
    except BadPattern:
        return defaults


def chart_files(top: Path) -> list[str]:
    """Relative paths (with `/`) of the files helm loads from the chart directory, in helm's walk order."""
    rules = chart_rules(top)
    found: list[str] = []
    seen: set[str] = set()

    def walk(folder: Path, prefix: str) -> None:
        real = os.path.realpath(folder)
        if real in seen:  # a symbolic link loop: helm would fail on it; do not spin
            return
        seen.add(real)
        for name in sorted(os.listdir(folder)):
            path, rel = folder / name, prefix + name
            is_dir = path.is_dir()  # follows symbolic links, as helm's walk does
            if ignored(rules, rel, is_dir):
                continue
            if is_dir:
                walk(path, rel + "/")
            else:
                found.append(rel)
        seen.discard(real)

    walk(top, "")
    return found


def chart_digest(path: Path) -> str:
    """sha256 over the chart's files (sorted relative paths, sizes and contents); for a .tgz, its bytes.

    Timestamps and permissions do not count: touching a file changes nothing.
    """
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(b"chart archive\0" + path.read_bytes())
        return digest.hexdigest()
    for rel in sorted(chart_files(path)):
        data = (path / rel).read_bytes()
        digest.update(b"%s\0%d\0" % (rel.encode("utf-8", "surrogateescape"), len(data)))
        digest.update(data)
    return digest.hexdigest()
