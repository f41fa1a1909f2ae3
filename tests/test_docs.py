"""The user docs stay true to the repository: every relative link in README.md and docs/*.md
resolves (files and #anchors), every file of the repository they name in backticks exists,
docs/architecture.md names only modules that exist and has a row for every package, and no
doc points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
#: Repository paths named in backticks: `tests/test_x.py`, `studies/y.toml`, `docs/...`.
REPO_PATH = re.compile(r"`((?:tests|studies|docs|mc_engine)/[\w./-]+)`")
#: Paths of the examples that are the user's own (placeholders), not files of the repository.
PLACEHOLDER = re.compile(r"my_|/data/")


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*?", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (m := re.match(r"#{1,6} (.+)", line)):
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def prose(path: Path) -> str:
    """The text outside fenced code blocks (links and paths in code are not the doc's)."""
    return re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_every_relative_link_resolves(doc):
    broken = []
    for target in LINK.findall(prose(doc)):
        if re.match(r"[a-z]+:", target):   # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(f"{target} (no file {file})")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target} (no heading #{anchor} in {rel(path)})")
    assert not broken, f"{rel(doc)}: broken links: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_every_repository_file_named_exists(doc):
    missing = sorted({p for p in REPO_PATH.findall(prose(doc))
                      if not PLACEHOLDER.search(p) and not (REPO / p.rstrip("/")).exists()})
    assert not missing, f"{rel(doc)} names files the repository does not have: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_no_doc_points_outside_the_repository(doc):
    text = doc.read_text(encoding="utf-8")
    assert "DESIGN.md" not in text and "../shared" not in text, rel(doc)


def test_architecture_names_existing_modules_and_every_package():
    """Each row of the Layers table names its package (`hardware/`) and modules relative to it
    (`devices.py`) or to mc_engine/ (`analog/tile.py`): all must exist, and every package of
    mc_engine/ has a row."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    pkg = REPO / "mc_engine"
    rows = re.findall(r"^\| (`[^|]+`(?:, `[^|]+`)*) \| (.+?) \| .+ \|$",
                      text.split("## Layers", 1)[1].split("\n## ", 1)[0], re.M)
    assert rows, "docs/architecture.md has no Layers table"
    covered, missing = set(), []
    for first, owns in rows:
        layers = re.findall(r"`([\w./]+)`", first)
        covered.update(layer.rstrip("/") for layer in layers)
        base = layers[0].rstrip("/") if layers[0].endswith("/") else ""
        for name in re.findall(r"`([\w/]+\.py)`", owns):
            if not ((pkg / base / name).exists() or (pkg / name).exists()):
                missing.append(f"{name} (row {first})")
    for name in re.findall(r"`([\w]+/[\w/]+\.py)`", text):   # the other tables' paths
        if not ((pkg / name).exists() or (REPO / name).exists()):
            missing.append(name)
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"
    packages = {p.name for p in pkg.iterdir() if (p / "__init__.py").exists()}
    modules = {p.name for p in pkg.glob("*.py") if p.name != "__init__.py"}
    uncovered = sorted((packages | modules) - covered)
    assert not uncovered, (f"docs/architecture.md's Layers table has no row for "
                           f"{uncovered} (add one: what it owns, what it must not know)")
