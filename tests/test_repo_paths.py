"""Every repository path a README, a doc, a comment or a message names exists: a reader who
follows one never lands on nothing (a file moved or removed takes its mentions along)."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO

TOP = ("ansible", "core", "docs", "infra", "mlflow-stack", "stack", "tests", "tools", "training")
# A path inside one of the top folders, not part of a longer path or URL (`/opt/training/...`,
# `https://.../docs/...`) nor of a dotted or templated name.
PATH = re.compile(r"(?<![\w/.:{}$-])((?:" + "|".join(re.escape(t) for t in TOP) + r")/[\w./-]*)")
# A document named by its file name alone, in capitals, must be one the repository has
# (lower-case names such as report.md are files the project writes).
DOCUMENT = re.compile(r"(?<![\w/.-])([A-Z][A-Z_]*\.md)\b")
SKIPPED_FILES = (".sum", ".mod", ".png", ".tgz", ".gitignore")
# A line that names a path of something else (a test's made-up repository) says so, on itself
# or in a comment just above it.
NOT_A_PATH = "not a repository path"


def tracked_text_files():
    listed = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in listed:
        path = REPO / name
        if name.endswith(SKIPPED_FILES) or not path.is_file():
            continue
        try:
            yield name, path.read_text()
        except UnicodeDecodeError:
            continue


def named_paths(text: str):
    lines = text.splitlines()
    marked = {i for i, line in enumerate(lines) if NOT_A_PATH in line}
    text = "\n".join(line for i, line in enumerate(lines) if not {i, i - 1} & marked)
    for match in PATH.finditer(text):
        after = text[match.end() : match.end() + 1]
        if after in "<*{$":
            continue  # a pattern or placeholder: roles/<role>/defaults, tests/*.py
        yield match.group(1).rstrip(".,:;)")


def test_every_named_repository_path_exists():
    missing = []
    files = list(tracked_text_files())
    documents = {name.rsplit("/", 1)[-1] for name, _ in files}
    for name, text in files:
        for path in named_paths(text):
            if not (REPO / path).exists():
                missing.append(f"{name}: {path}")
        for match in DOCUMENT.finditer(text):
            if match.group(1) not in documents:
                missing.append(f"{name}: {match.group(1)}")
    assert not missing, "paths named but not in the repository:\n" + "\n".join(sorted(set(missing)))
