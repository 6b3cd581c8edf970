"""README's examples cannot drift: every `invoke …`/`playbooks …` command it shows names real tasks
with real options (parsed by invoke's own parser against the collection), its two commands are
the ones CI runs, and its start-up snippet is the one tests/test_session_hook.py runs twice."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from invoke import Collection, Program
from invoke.parser import Parser, ParserContext

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
COMMAND = re.compile(r"^(?:\$ )?(?:\S*/)?(invoke|playbooks)(?: |$)")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.DOTALL | re.MULTILINE)


def inline_spans(text: str) -> list[str]:
    outside = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    return re.findall(r"`([^`\n]+)`", outside)


def optional(match: re.Match) -> str:
    """`[--to PATH]` is `--to=x`, `[--force]` is `--force`: the flag is checked, the notation dropped."""
    return f"{match[1]}=x" if match[2] else match[1]


def commands(snippet: str) -> list[str]:
    """Each invoke/playbooks command of a shell snippet: split on && || ; |, $(…) opened."""
    snippet = re.sub(r"#.*$", "", snippet, flags=re.MULTILINE)
    snippet = re.sub(r"\[(--[\w-]+)( [^\]]+)?\]", optional, snippet)
    snippet = snippet.replace('"$(', " ; ").replace("$(", " ; ").replace(')"', " ; ")
    found = []
    for part in re.split(r"&&|\|\||;|\||\n", snippet):
        part = re.sub(r"\s*[<>]+\s*\S+", "", part).strip()  # redirections
        part = part.removeprefix("eval ").strip()
        if COMMAND.match(part):
            found.append(part.removeprefix("$ "))
    return found


def examples() -> list[str]:
    found = []
    for language, body in fenced_blocks(README):
        if language in ("sh", "bash", "console", ""):
            lines = body.splitlines()
            if language == "console":  # only the prompts are commands there
                lines = [line[2:] for line in lines if line.startswith("$ ")]
            found += commands("\n".join(lines))
    for span in inline_spans(README):
        found += commands(span)
    return sorted(set(found))


def parser() -> Parser:
    """The tasks `invoke` has in a checkout: the collection, plus the developer tasks tasks.py adds
    (added to a collection of their own here: the shared one stays as the package ships it)."""
    from devtools import cluster, testing
    from playbooks.collection import ns

    developer = Collection()
    developer.add_collection(cluster.ns)
    developer.add_collection(testing.ns)
    return Parser(
        initial=ParserContext(args=Program().core_args()), contexts=ns.to_contexts() + developer.to_contexts()
    )


NOT_COMMANDS = {"invoke a b c"}  # prose: "tasks chain in one call"
TASK_MENTION = re.compile(r"^(?:invoke |playbooks )?((?:[a-z]+\.)?[a-z_]+)\b")
NOT_TASKS = {"dask.array", "cluster.local"}  # a Python module; the cluster domain
COLLECTIONS = ("mlflow", "dask", "gateway", "storage", "forward", "cluster", "test")


def test_readme_shows_commands():
    assert len(examples()) >= 20, examples()


@pytest.mark.parametrize("example", sorted(set(examples()) - NOT_COMMANDS))
def test_every_example_names_real_tasks_and_options(example):
    argv = shlex.split(example)[1:]
    if argv[:1] == ["--help"]:  # `invoke --help TASK`: --help takes the task as its value
        argv = [argv[1], "--help"]
    parsed = parser().parse_argv(argv)  # raises ParseError on an unknown task or flag
    assert parsed, example


def task_mentions() -> list[str]:
    """Task names in inline code (`mlflow.up [--port P]`, `forward.stop`): each must exist."""
    found = set()
    for span in inline_spans(README):
        match = TASK_MENTION.match(span)
        if match and match[1].split(".")[0] in COLLECTIONS and "." in match[1]:
            found.add(match[1])
    return sorted(found)


def config_keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        keys.add(f"{prefix}{key}")
        if isinstance(value, dict):
            keys |= config_keys(value, f"{prefix}{key}.")
    return keys


def test_every_task_readme_mentions_exists():
    from playbooks import registry
    from playbooks.defaults import DEFAULTS

    known = {name for context in parser().contexts.values() for name in [context.name, *context.aliases]}
    from devtools.cluster import DEFAULTS as CLUSTER

    sections = {**DEFAULTS, "cluster": CLUSTER, **{service.name: service.defaults for service in registry.services()}}
    settings = config_keys(sections) | NOT_TASKS
    mentioned = task_mentions()
    assert len(mentioned) >= 10, mentioned
    assert set(mentioned) - known - settings == set()


def test_a_renamed_flag_is_caught():
    from invoke.exceptions import ParseError

    with pytest.raises(ParseError):
        parser().parse_argv(["mlflow.up", "--buckets", "ws-frank"])
    with pytest.raises(ParseError):
        parser().parse_argv(["forward.begin"])


def test_the_two_commands_are_those_ci_runs():
    rows = dict(re.findall(r"^\| (set up, then [^|]+?) \| `([^`]+)` \|$", README, re.MULTILINE))
    test_command = next(command for what, command in rows.items() if "tests" in what)
    assert test_command in (ROOT / ".ci" / "run").read_text()
    assert any(command.endswith("invoke up smoke") for command in rows.values()), rows


def test_the_start_up_snippet_is_the_one_the_hook_test_runs():
    from tests.test_session_hook import SNIPPET

    section = README.split("### In a session's start-up script", 1)[1]
    [(_, body)] = fenced_blocks(section)[:1]
    assert body.strip() == SNIPPET
