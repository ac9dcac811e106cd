"""YAML documents that remember where every key and value was written.

Rule files and the daemon config are YAML written by people; when something is wrong the message
must name the file, line, column and key path. ``load_yaml`` returns the plain data plus a map from
key paths to positions; ``Problem`` is one finding in the ``file:line:column: key.path: message``
form that ``rules check`` and config validation print.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KeyPath = tuple[str | int, ...]

# Config and rule files are small and written by people; anything past these bounds is a mistake or an
# attack (a 1 KB "billion laughs" file expanded to gigabytes; 20,000 levels of nesting overflowed the
# stack), refused with file:line before it costs anything.
MAX_YAML_BYTES = 1024 * 1024
MAX_YAML_DEPTH = 64


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases (``*name``: each one is a copy of a subtree, the billion-laughs
    lever) and with a nesting limit."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed: write the value out", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """PyYAML's constructors raise plain exceptions on values they cannot convert (found by tests/fuzz: ``!!int``
        alone, IndexError; ``2024-13-01``, ``!!float x``, 5,000 digits, ValueError; ``!!timestamp x``, AttributeError):
        each is a YAML error at the value's position."""
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:
            kind = str(node.tag).rpartition(":")[2] or "value"
            detail = f" ({exc})" if isinstance(exc, ValueError) else ""  # "month must be in 1..12"; others say nothing
            problem = f"not a valid {kind}{detail}"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int  # 1-based
    column: int  # 1-based
    key_path: str
    message: str
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        label = "" if self.severity == "error" else f"{self.severity}: "
        key = self.key_path or "(document)"
        text = f"{self.file}:{self.line}:{self.column}: {label}{key}: {self.message}"
        # one line: a file name, key or value holding a newline must not print a line of its own (tests/fuzz)
        return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class YamlError(Exception):
    """One or more problems that make a YAML file unusable. ``str()`` lists them, one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass(slots=True)
class YamlDocument:
    """Parsed data and, for every key path, the (line, column) where it was written (1-based)."""

    file: str
    data: Any
    marks: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: KeyPath) -> tuple[int, int]:
        """The position of ``path``, or of its nearest written ancestor."""
        for end in range(len(path), -1, -1):
            mark = self.marks.get(path[:end])
            if mark is not None:
                return mark
        return (1, 1)

    def problem(self, path: KeyPath, message: str, severity: str = "error") -> Problem:
        line, column = self.where(path)
        return Problem(self.file, line, column, format_path(path), message, severity)


def _walk(node: yaml.Node, path: KeyPath, marks: dict[KeyPath, tuple[int, int]],
          problems: list[Problem], file: str) -> None:
    marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            child = (*path, key)
            if key in seen and key != "<<":
                problems.append(Problem(file, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                        format_path(child), "duplicate key (each key may appear once)"))
            seen.add(key)
            marks[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _walk(value_node, child, marks, problems, file)
            marks[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), marks, problems, file)


def parse_yaml(text: str, file: str) -> YamlDocument:
    """Parse YAML text (safe loader). Raises YamlError with positions on syntax errors."""
    try:
        loader = _BoundedLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlError([Problem(file, line, column, "", f"not valid YAML: {exc.problem or exc}")]) from None
    except yaml.reader.ReaderError as exc:  # a control character: its own position, not "1:1 ... position 5186"
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        raise YamlError([Problem(file, line, column, "", f"not valid YAML: unacceptable character "
                                                         f"#x{exc.character:04x}: {exc.reason}")]) from None
    except yaml.YAMLError as exc:
        raise YamlError([Problem(file, 1, 1, "", f"not valid YAML: {exc}")]) from None
    marks: dict[KeyPath, tuple[int, int]] = {}
    problems: list[Problem] = []
    if node is not None:
        _walk(node, (), marks, problems, file)
    if problems:
        raise YamlError(problems)
    return YamlDocument(file, data, marks)


def load_yaml(path: str | Path, display_name: str | None = None) -> YamlDocument:
    """Read and parse a YAML file; unreadable or undecodable files become a YamlError too."""
    name = display_name or str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_YAML_BYTES + 1)
        if len(raw) > MAX_YAML_BYTES:
            raise YamlError([Problem(name, 1, 1, "", f"larger than {MAX_YAML_BYTES // 1024} KiB: not a config or "
                                                       f"rule file")])
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlError([Problem(name, 1, 1, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]) from None
    except OSError as exc:
        raise YamlError([Problem(name, 1, 1, "", f"cannot read file: {exc.strerror or exc}")]) from None
    except ValueError as exc:  # a NUL byte in the name (tests/fuzz)
        raise YamlError([Problem(name, 1, 1, "", f"cannot read file: {exc}")]) from None
    return parse_yaml(text, name)
