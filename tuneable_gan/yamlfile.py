"""Reading the YAML a user hands us: one ConfigError line naming the path for every bad file.

Run configs, search spaces, a space's ``base:`` file and ``--set`` values all come through
here. Besides malformed YAML and a document that is not a mapping, a path may name a directory,
a file we may not read, a binary or non-UTF-8 file, a huge file, YAML nested deeper than the
parser can recurse, or an alias bomb: a few hundred bytes whose anchors, repeated by aliases,
expand to billions of values once anything walks or prints them. Anchors and aliases are fine
(``<<: *defaults`` is a fair way to share settings) as long as the document they expand to
stays small: ``MAX_VALUES`` nodes, far above any real config and far below a bomb.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import yaml

from tuneable_gan.errors import ConfigError

# A config is a few hundred bytes and a search space with its cell rules a few KB; 8 MiB leaves
# room for long citations while bounding what one read can cost.
MAX_BYTES = 8 * 1024 * 1024
# Nodes of the document with every alias expanded (a scalar, a list or a mapping count one each):
# real configs have under a thousand.
MAX_VALUES = 100_000
# Brackets open at once. PyYAML's scanner is quadratic in the flow depth (seconds before it
# gives up at Python's recursion limit); real configs nest a few levels.
MAX_DEPTH = 100
_BRACKET = re.compile(r"[\[\]{}]")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def expanded_size(root: yaml.Node, limit: int = MAX_VALUES) -> int | None:
    """Nodes under ``root`` (itself included) with every alias expanded, counted up to
    ``limit + 1``; None when an alias refers to a node that contains it (a recursive document).
    Each distinct node is visited once, so a bomb costs as little as its text."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    # An explicit stack: a deep document must not exhaust Python's recursion here.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            sizes[key] = min(limit + 1, 1 + sum(sizes[id(c)] for c in _children(node)))
        elif key not in sizes:
            open_.add(key)
            stack.append((node, True))
            for child in _children(node):
                if id(child) in open_:
                    return None
                if id(child) not in sizes:
                    stack.append((child, False))
    return sizes[id(root)]


def _too_deep(text: str) -> bool:
    # Counts brackets inside quoted strings too: only a hundred unmatched ones could mislead it.
    depth = 0
    for m in _BRACKET.finditer(text):
        depth += 1 if m.group() in "[{" else -1
        if depth > MAX_DEPTH:
            return True
    return False


def safe_load(text: str, where: str) -> Any:
    """The YAML value of ``text`` (None for an empty document), read with the safe loader.

    ConfigError, prefixed with ``where``, for an alias bomb, a recursive alias or nesting too
    deep; malformed YAML raises ``yaml.YAMLError`` as ``yaml.safe_load`` does."""
    if _too_deep(text):
        raise ConfigError(f"{where}: YAML nested too deeply to read (more than {MAX_DEPTH} "
                          "levels of [ ] or { })")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = expanded_size(node)
        if size is None:
            raise ConfigError(f"{where}: a YAML alias refers to a value that contains it "
                              "(a recursive document); write the values out")
        if size > MAX_VALUES:
            raise ConfigError(f"{where}: YAML anchors and aliases expand to more than "
                              f"{MAX_VALUES} values (an alias bomb?); write the values out or "
                              "use fewer aliases")
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply to read") from None
    finally:
        loader.dispose()


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    line = f" line {mark.line + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or getattr(e, "reason", None)
    return f"{line} is not valid YAML" + (f" ({problem})" if problem else "")


def read_text(path: str | Path) -> str:
    """The UTF-8 text of a regular file; ConfigError naming the path when it is missing, a
    directory or something else than a file, unreadable, too large, binary or not UTF-8."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except OSError as e:
        raise ConfigError(f"cannot read {p}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{p} is a directory, not a YAML file")
    if not stat.S_ISREG(st.st_mode):
        # A FIFO or a device would block or never end.
        raise ConfigError(f"{p} is not a regular file; give a YAML file")
    if st.st_size > MAX_BYTES:
        raise ConfigError(f"{p} is {st.st_size} bytes, more than a config can be "
                          f"({MAX_BYTES} bytes); is it the right file?")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {p}: {e.strerror or e}") from None
    if b"\0" in raw:
        raise ConfigError(f"{p} is a binary file, not YAML text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset "
                          f"{e.start}); save it as UTF-8") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from a file (``{}`` for an empty one), with one-line errors naming the
    path for a missing, unreadable, binary, malformed or oversized file or a non-mapping."""
    p = Path(path)
    try:
        data = safe_load(read_text(p), str(p))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}:{_yaml_problem(e)}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of config sections, got {type(data).__name__}")
    return data
