"""The documentation holds together: a short README that opens with the two set-up commands, and no
link or document mention (in the docs, the code, the configs, the tests or the notebook) that points
to a file or section the repository does not have."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
README_MAX_LINES = 300

# The README's first code block: the main job and the test suite, exactly as users copy them.
MAIN_COMMAND = ('python3 -m venv .venv && . .venv/bin/activate && pip install "torch==${TORCH_VERSION:-2.13.0}" -e . '
                "&& python -m stereo.train experiment=demo_cpu")
TEST_COMMAND = ('python3 -m venv .venv && . .venv/bin/activate && pip install "torch==${TORCH_VERSION:-2.13.0}" '
                '-e ".[test]" && python -m pytest -q')

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`[^`]*`")
SOURCE_DIRS = ("stereo", "conf", "scripts", "tests", "notebooks")
SOURCE_SUFFIXES = {".py", ".yaml", ".yml", ".ipynb", ".toml", ".md", ".txt", ".cfg"}
DOC_MENTION = re.compile(r"\bdocs/([\w.-]+\.md)(?:#([\w-]+))?")
README_SECTION_MENTION = re.compile(r"README:?\s+\"([^\"]+)\"")
# Documents that live outside the repository (the team's facts file, planning notes) must not be cited.
OUTSIDE_DOCUMENTS = re.compile(r"\bSPEC(\.md|\s*§)|\bcontracts?\s+\d")


def prose_lines(path: Path) -> list[str]:
    """The file's lines outside fenced code blocks."""
    lines, in_code = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_code = not in_code
            continue
        if not in_code:
            lines.append(line)
    return lines


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = INLINE_CODE.sub(lambda m: m.group(0)[1:-1], heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file (repeated headings get -1, -2, ... as on GitHub)."""
    found: set[str] = set()
    for line in prose_lines(path):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            anchor = github_anchor(match.group(1))
            unique, n = anchor, 0
            while unique in found:
                n += 1
                unique = f"{anchor}-{n}"
            found.add(unique)
    return found


def broken_target(source: Path, target: str) -> str | None:
    """Why the link ``target`` written in ``source`` does not resolve, or None when it does."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
        return None
    path_part, _, anchor = target.partition("#")
    file = (source.parent / path_part).resolve() if path_part else source
    if not file.exists():
        return f"{file.relative_to(ROOT) if file.is_relative_to(ROOT) else file} does not exist"
    if anchor and file.suffix == ".md" and anchor not in anchors(file):
        return f"{file.relative_to(ROOT)} has no section #{anchor}"
    return None


def source_files() -> list[Path]:
    files = [ROOT / "pyproject.toml"]
    for directory in SOURCE_DIRS:
        files += [p for p in sorted((ROOT / directory).rglob("*")) if p.is_file() and p.suffix in SOURCE_SUFFIXES]
    return [p for p in files if p != Path(__file__).resolve() and "__pycache__" not in p.parts]


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_opens_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    first_block = re.search(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M)
    assert first_block, "README.md has no code block"
    assert "\n## " not in text[: first_block.start()], "the two set-up commands must come before any section"
    commands = [line for line in first_block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert commands == [MAIN_COMMAND, TEST_COMMAND]


def test_ci_runs_the_readme_test_command():
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc):
    problems = []
    for number, line in enumerate(prose_lines(doc), 1):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            reason = broken_target(doc, target)
            if reason:
                problems.append(f"{target}: {reason}")
    assert not problems, f"{doc.relative_to(ROOT)}: broken links:\n" + "\n".join(problems)


def test_docs_index_lists_every_document():
    index = ROOT / "docs" / "index.md"
    linked = {(index.parent / t.partition("#")[0]).resolve() for t in LINK.findall(index.read_text(encoding="utf-8"))}
    missing = [p.name for p in DOCS if p != index and p.resolve() not in linked]
    assert not missing, f"docs/index.md does not list {missing}"


def test_code_mentions_only_documents_in_the_repository():
    problems = []
    readme_anchors = anchors(README)
    for path in source_files() + [README, *DOCS]:
        text = path.read_text(encoding="utf-8", errors="replace")
        where = path.relative_to(ROOT)
        for match in OUTSIDE_DOCUMENTS.finditer(text):
            problems.append(f"{where}: cites {match.group(0)!r}, which is not in the repository")
        if path == README or path in DOCS:
            continue  # their links are checked by test_every_relative_link_resolves
        for name, anchor in DOC_MENTION.findall(text):
            reason = broken_target(ROOT / "docs" / "index.md", name + (f"#{anchor}" if anchor else ""))
            if reason:
                problems.append(f"{where}: mentions docs/{name}{'#' + anchor if anchor else ''}: {reason}")
        for section in README_SECTION_MENTION.findall(text):
            if github_anchor(section) not in readme_anchors:
                problems.append(f"{where}: mentions README section {section!r}, which does not exist")
    assert not problems, "\n".join(problems)
