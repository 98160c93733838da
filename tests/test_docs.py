"""The repository's own documents: every reference to a document or a ``docs/`` path resolves.

Checked over every tracked (and new, not ignored) text file:
- citations of the method and conventions documents that never were in the repository;
- every ``*.md`` path names a file in the repository (relative to the citing file or to the root),
  except documents the recipes write at run time (``RESULTS.md``);
- every ``docs/…`` path exists, and a cited section (``docs/method.md §Losses``) is a heading there.
In README.md, recipes/README.md and docs/*.md, every relative link resolves (its ``#anchor`` too,
when it points into a markdown file) and every backticked repository path exists.
"""
from __future__ import annotations

import fnmatch
import os
import re
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import List, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve().relative_to(ROOT).as_posix()
SKIP_DIRS = {".git", ".venv", "__pycache__", "data", "exp", "downloads", ".pytest_cache"}
TEXT_SUFFIXES = {".py", ".sh", ".md", ".yaml", ".yml", ".cfg", ".toml", ".txt", ".cpp", ""}
GENERATED_DOCUMENTS = {"RESULTS.md", "RESULTS_per_seed.md", "MODEL_CARD.md"}  # written by the tools (RESULTS*.md by stage 5, MODEL_CARD.md by teacher pretraining)
SOURCE_DIRS = ("svmix", "tests", "tools", "conf", "recipes", "local", "benchmarks", "docs")
LINKED_DOCUMENTS = ("README.md", "recipes/README.md")

# Paths of the layout other branches introduce (a directory covers what is below it); docs may
# name them before they exist. Once a path exists, its entry must go (test_planned_paths_are_pending),
# and the path is then checked like any other.
PLANNED_PATHS: set = set()

# The two documents code used to cite that were never in the repository (the names are assembled
# here so that this file does not itself cite them), and the forms those citations took.
OLD_METHOD, OLD_CONVENTIONS = "SP" + "EC", "CONVEN" + "TIONS"
MISSING_DOCUMENT_CITATIONS = [
    re.compile(rf"\b{OLD_METHOD}(\.md)?\s*§"),
    re.compile(rf"\b{OLD_METHOD}(?:'s)?\s*§\s*\d", re.IGNORECASE),
    re.compile(rf"\b{OLD_METHOD}\.md\b", re.IGNORECASE),
    re.compile(rf"`{OLD_METHOD}`|\bfollows?\s+{OLD_METHOD}\b"),
    re.compile(rf"\b{OLD_CONVENTIONS}(\.md)?\b"),
    re.compile(rf"\bthe {OLD_METHOD}'s\b|\({OLD_METHOD}: \d", re.IGNORECASE),
]
MD_PATH = re.compile(r"(?<![\w/.-])((?:\.{1,2}/)?[\w][\w./-]*\.md)\b")
DOCS_PATH = re.compile(r"(?<![\w/.-])(docs/[\w./-]*[\w/])")
SECTION = re.compile(r"(docs/[\w./-]+\.md),?\s*§\s*([^.,;:()\[\]`\"'\n]+)")
MD_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
BACKTICKED = re.compile(r"`([^`\s]+)`")


@lru_cache(maxsize=None)
def repo_files() -> List[str]:
    """Tracked plus untracked, not ignored files (a fresh file counts), as POSIX paths."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                             cwd=ROOT, capture_output=True, check=True).stdout.decode()
        files = [f for f in out.split("\0") if f and (ROOT / f).is_file()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        files = []
        for dirpath, dirnames, filenames in os.walk(ROOT):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
            files += [Path(dirpath, name).relative_to(ROOT).as_posix() for name in filenames]
    return sorted(files)


@lru_cache(maxsize=None)
def repo_paths() -> Set[str]:
    """Every repository file and every directory holding one (directories end with '/')."""
    paths = set(repo_files())
    for f in repo_files():
        parts = f.split("/")[:-1]
        paths.update("/".join(parts[:i]) + "/" for i in range(1, len(parts) + 1))
    return paths


def exists(path: str) -> bool:
    """``path`` (relative to the root, normalised) is a repository file or directory; globs match one."""
    path = os.path.normpath(path).replace(os.sep, "/")
    if path.startswith("../"):
        return False
    if any(ch in path for ch in "*?["):
        return any(fnmatch.fnmatchcase(f, path) for f in repo_files())
    return path in repo_paths() or path + "/" in repo_paths()


def planned(path: str) -> bool:
    path = os.path.normpath(path).replace(os.sep, "/")
    return any(path == p.rstrip("/") or (p.endswith("/") and path.startswith(p)) for p in PLANNED_PATHS)


@lru_cache(maxsize=None)
def text(path: str) -> str:
    try:
        return (ROOT / path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return ""


def text_files() -> List[str]:
    return [f for f in repo_files() if Path(f).suffix in TEXT_SUFFIXES and f != THIS_FILE]


def headings(md_path: str) -> List[str]:
    return [line.lstrip("#").strip() for line in text(md_path).splitlines() if re.match(r"#{1,6} ", line)]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def lines_of(path: str):
    return enumerate(text(path).splitlines(), 1)


def test_no_citation_of_documents_outside_the_repository():
    found = [f"{f}:{n}: {line.strip()}" for f in text_files() for n, line in lines_of(f)
             if any(p.search(line) for p in MISSING_DOCUMENT_CITATIONS)]
    assert not found, "cite docs/method.md or docs/conventions.md instead:\n" + "\n".join(found)


def test_markdown_paths_exist():
    missing = []
    for f in text_files():
        here = Path(f).parent.as_posix()
        for n, line in lines_of(f):
            for ref in MD_PATH.findall(line):
                if Path(ref).name in GENERATED_DOCUMENTS:
                    continue
                if not (exists(f"{here}/{ref}") or exists(ref)):
                    missing.append(f"{f}:{n}: {ref}")
    assert not missing, "references to documents that are not in the repository:\n" + "\n".join(missing)


def test_docs_paths_and_sections_exist():
    problems = []
    for f in text_files():
        for n, line in lines_of(f):
            for ref in DOCS_PATH.findall(line):
                if not exists(ref) and not planned(ref):
                    problems.append(f"{f}:{n}: {ref} does not exist")
            for doc, section in SECTION.findall(line):
                section = section.strip()
                if exists(doc) and not any(section == h or section.startswith(h + " ") for h in headings(doc)):
                    problems.append(f"{f}:{n}: {doc} has no section '{section}'")
    assert not problems, "\n".join(problems)


def documents_with_links() -> List[str]:
    return [*LINKED_DOCUMENTS, *(f for f in repo_files() if f.startswith("docs/") and f.endswith(".md"))]


@pytest.mark.parametrize("doc", documents_with_links())
def test_relative_links_resolve(doc):
    here = Path(doc).parent.as_posix()
    problems = []
    for n, line in lines_of(doc):
        for target in MD_LINK.findall(line):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = os.path.normpath(f"{here}/{path}").replace(os.sep, "/") if path else doc
            if path and not exists(resolved) and not planned(resolved):
                problems.append(f"{doc}:{n}: link target {target} does not exist")
            elif anchor and resolved.endswith(".md") and exists(resolved) \
                    and anchor not in {slug(h) for h in headings(resolved)}:
                problems.append(f"{doc}:{n}: {resolved} has no heading for #{anchor}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", documents_with_links())
def test_backticked_repository_paths_exist(doc):
    problems = []
    for n, line in lines_of(doc):
        for token in BACKTICKED.findall(line):
            token = token.rstrip(".,:;")
            if "<" in token or not token.startswith(tuple(d + "/" for d in SOURCE_DIRS)):
                continue
            if not exists(token) and not planned(token):
                problems.append(f"{doc}:{n}: `{token}` is not in the repository")
    assert not problems, "\n".join(problems)


def test_readme_links_the_documentation():
    readme = text("README.md")
    for doc in ("docs/method.md", "docs/conventions.md", "docs/architecture.md"):
        assert exists(doc), f"{doc} is missing"
        assert f"]({doc})" in readme, f"README.md does not link {doc}"


def test_planned_paths_are_pending():
    arrived = sorted(p for p in PLANNED_PATHS if exists(p))
    assert not arrived, f"these paths exist now; remove them from PLANNED_PATHS: {', '.join(arrived)}"


# The checks above must be able to fail: each pattern catches the forms it is meant for.
@pytest.mark.parametrize("line", [f"see {OLD_METHOD} §6", f"({OLD_METHOD.lower()} §1-3)",
                                  f"the {OLD_METHOD.lower()}'s segment rule", f"follow `{OLD_METHOD}`",
                                  f"see {OLD_CONVENTIONS}.md", f"stage numbers in {OLD_CONVENTIONS}",
                                  f"({OLD_METHOD.lower()}: 10)", f"{OLD_METHOD.title()} §2 gives 0.632 GMACs",
                                  f"see {OLD_METHOD.lower()}.md"])
def test_missing_document_patterns_catch_old_citations(line):
    assert any(p.search(line) for p in MISSING_DOCUMENT_CITATIONS)


@pytest.mark.parametrize("line", [f"--teacher {OLD_METHOD}", "teacher_spec: str", "a teacher spec string",
                                  "docs/method.md §Losses", "the specification of a layer",
                                  "attributes `spec` and `fingerprint`", "def matches(spec: str) -> bool:"])
def test_missing_document_patterns_leave_other_uses_alone(line):
    assert not any(p.search(line) for p in MISSING_DOCUMENT_CITATIONS)


def test_path_checks_reject_missing_targets(monkeypatch):
    assert exists("docs/method.md") and exists("svmix/") and exists("conf/model/*.yaml")
    assert not exists("docs/nothing-here.md") and not exists("svmix/nothing/*.py") and not exists("../README.md")
    assert MD_PATH.findall("see docs/mini-voices.md and ../README.md") == ["docs/mini-voices.md", "../README.md"]
    assert SECTION.findall("docs/method.md §Losses: AAM") == [("docs/method.md", "Losses")]
    assert "Losses" in headings("docs/method.md")
    monkeypatch.setitem(globals(), "PLANNED_PATHS", {"svmix/models/fast/", "svmix/x.py"})
    assert planned("svmix/models/fast/") and planned("svmix/models/fast/kernels.cpp") and planned("svmix/x.py")
    assert not planned("svmix/models/fastest.py") and not planned("svmix/models/")
