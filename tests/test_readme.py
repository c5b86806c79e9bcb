"""The README's curl examples, run as written against a real server: each answer it shows in full is the answer."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Server

README = ROOT / "README.md"
README_URL = "http://127.0.0.1:8000"
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.DOTALL)
# float32 predictions agree across CPUs (AVX-512 against AVX2 kernels) to a few ulps, not bit for bit.
RELATIVE = 1e-5


def examples(readme: Path = README) -> list[tuple[str, Any]]:
    """(command, expected answer) for every curl of the README whose answer it shows whole: in a `# {...}`
    comment after the command, or in a json block right after its sh block. Answers with `...` are excerpts."""
    found = []
    blocks = FENCE.findall(readme.read_text())
    for index, (language, text) in enumerate(blocks):
        if language != "sh":
            continue
        commands = _commands(text)
        following = blocks[index + 1] if index + 1 < len(blocks) else ("", "")
        for number, (command, comment) in enumerate(commands):
            shown = comment or (following[1] if following[0] == "json" and number == len(commands) - 1 else "")
            if README_URL in command and shown and "..." not in shown:
                found.append((command, json.loads(shown)))
    return found


def _commands(text: str) -> list[tuple[str, str]]:
    """The curl commands of an sh block (a quoted argument may span lines), each with the answer a comment shows:
    after it on its last line, or alone on the next line."""
    commands: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        if not current and line.startswith("# {") and commands and not commands[-1][1]:
            commands[-1] = (commands[-1][0], line[2:])
        if not current and not line.startswith("curl "):
            continue
        current += ("\n" if current else "") + line
        if current.count("'") % 2 == 0:  # every quote closed: the command ends on this line
            command, _, comment = current.partition(" # ")
            comment = comment.strip()
            commands.append((command.strip(), comment if comment.startswith(("{", "[")) else ""))
            current = ""
    return commands


def same(got: Any, expected: Any) -> bool:
    if isinstance(expected, float) or isinstance(got, float):
        return isinstance(got, (int, float)) and math.isclose(got, expected, rel_tol=RELATIVE)
    if isinstance(expected, dict):
        return isinstance(got, dict) and got.keys() == expected.keys() and all(
            same(got[key], value) for key, value in expected.items())
    if isinstance(expected, list):
        return isinstance(got, list) and len(got) == len(expected) and all(map(same, got, expected))
    return bool(got == expected)


def test_the_readme_shows_whole_answers_to_check() -> None:
    commands = [command for command, _ in examples()]
    assert len(commands) >= 4, commands
    assert any("/models/linear/predict" in c for c in commands) and any("/v2/models/linear/infer" in c
                                                                        for c in commands)


def test_a_shown_answer_that_differs_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "README.md"
    page.write_text(f"```sh\ncurl -s {README_URL}/health/ready  # {{\"status\":\"ready\"}}\n"
                    f"curl -s {README_URL}/models  # the list\n"
                    f"curl -s {README_URL}/models/mlp -d '[1,\n 2]'\n# {{\"prediction\": 1.5}}\n```\n"
                    f"```sh\ncurl -s {README_URL}/models/linear/predict -d '{{\"CRIM\": 1,\n  \"ZN\": 2}}'\n```\n"
                    "```json\n{\"prediction\": 29.9}\n```\n")
    assert examples(page) == [(f"curl -s {README_URL}/health/ready", {"status": "ready"}),
                              (f"curl -s {README_URL}/models/mlp -d '[1,\n 2]'", {"prediction": 1.5}),
                              (f"curl -s {README_URL}/models/linear/predict -d '{{\"CRIM\": 1,\n  \"ZN\": 2}}'",
                               {"prediction": 29.9})]
    assert same({"prediction": 29.9000001}, {"prediction": 29.9})
    assert not same({"prediction": 29.91}, {"prediction": 29.9})
    assert not same({"prediction": 29.9, "warnings": []}, {"prediction": 29.9})


@pytest.mark.parametrize("command, expected", examples(), ids=lambda value: str(value).split("\n")[0][:60])
def test_each_readme_example_answers_as_shown(server: Server, command: str, expected: Any) -> None:
    completed = subprocess.run(["bash", "-c", command.replace(README_URL, server.url)], capture_output=True,
                               text=True, timeout=30, check=True)
    answer = json.loads(completed.stdout)
    assert same(answer, expected), f"{command}\nanswered {answer}\nREADME shows {expected}"
