"""Properties of the repository as a whole: the import graph of the packages (no cycle; only
tuneable_gan/tune imports ray), the config's choice lists against the registries, and no file
pointing at a document the repository does not contain."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tuneable_gan", "analysis")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module of ``known`` that ``name`` imports, at any depth of the file (lazy imports
    inside functions count; imports under ``if TYPE_CHECKING`` do not run and do not count).
    ``from a.b import c`` names the module ``a.b.c`` when that is a module, else ``a.b``."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join([*pkg, base] if base else pkg)
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: {i for i in imports_of(m, p, known) if i in known and i != m}
            for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_is_read_from_the_source():
    g = graph()
    assert "tuneable_gan.trainer" in g["tuneable_gan.loop"]
    assert "tuneable_gan.datasets.base" in g["tuneable_gan.datasets.cifar"]
    assert "tuneable_gan.run_dir" in g["tuneable_gan.cli"]  # a lazy import counts
    # The checker itself finds a planted cycle.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_one_that_imports_it_back():
    assert cycles(graph()) == []


def test_only_tuneable_gan_tune_imports_ray():
    mods = modules()
    offenders = sorted(
        m for m, p in mods.items() if not m.startswith("tuneable_gan.tune")
        and any(i == "ray" or i.startswith("ray.") for i in imports_of(m, p, set(mods))))
    assert offenders == []


@pytest.mark.parametrize("key, registry", [
    ("data.name", "tuneable_gan.datasets:DATASETS"),
    ("model.arch", "tuneable_gan.models:MODELS"),
    ("loss.name", "tuneable_gan.losses:LOSSES"),
    ("regularizer.name", "tuneable_gan.regularizers:REGULARIZERS"),
    ("eval.extractor", "tuneable_gan.extractors:EXTRACTORS"),
])
def test_config_choices_are_the_registry_names(key, registry):
    import dataclasses
    import importlib

    from tuneable_gan.config import SECTIONS

    section, field = key.split(".")
    choices = next(f.metadata["choices"] for f in dataclasses.fields(SECTIONS[section])
                   if f.name == field)
    mod, attr = registry.split(":")
    assert sorted(choices) == getattr(importlib.import_module(mod), attr).names()


# Pointers at this repository's documents, spaces, configs and benchmarks; each must exist.
# (Paths inside the reference repositories, cited with the repository's name, are not ours.)
PATH_RE = re.compile(
    r"(?<![\w/.-])((?:docs|search_spaces|configs|benchmarks)/[\w./-]*\.(?:md|yaml|py|png|sh))")
OUTSIDE_RE = re.compile(r"\.\./shared|\b(?:METHODS|DESIGN|RAY|TORCH_FIDELITY)\.md\b")


def tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    return [ROOT / f for f in out if not f.endswith((".png", ".parquet"))]


def test_no_file_points_outside_the_repository_or_at_a_missing_file():
    outside, missing = [], []
    for path in tracked_text_files():
        try:
            text = path.read_text()
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        rel = path.relative_to(ROOT)
        outside += [f"{rel}: {m.group(0)}" for m in OUTSIDE_RE.finditer(text)]
        for m in PATH_RE.finditer(text):
            target = m.group(1).rstrip(".")
            if not (ROOT / target).exists():
                missing.append(f"{rel}: {target}")
    assert outside == []
    assert missing == []
