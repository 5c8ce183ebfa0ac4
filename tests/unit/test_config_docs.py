"""docs/configuration.md lists every key of jobs/pipeline/config.py with its type and default, so it cannot drift.

The table between the markers is generated from the pydantic models; the meanings are kept from the document (a new
key starts with the comment above it in config.py). After changing the configuration, regenerate it with

    .venv/bin/python tests/unit/test_config_docs.py --write
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import re
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(REPO_ROOT))

from jobs.pipeline.config import AppConfig  # noqa: E402 - after the path setup above, for the script form

DOC = REPO_ROOT / "docs" / "configuration.md"
BEGIN = "<!-- BEGIN generated configuration table: .venv/bin/python tests/unit/test_config_docs.py --write -->"
END = "<!-- END generated configuration table -->"
HEADER = "| key | type | default | meaning |\n| --- | --- | --- | --- |"
ROW = re.compile(r"^\| `(?P<key>[^`]+)` \| (?P<type>.*?) \| (?P<default>.*?) \| (?P<meaning>.*) \|$")


def type_name(annotation: Any) -> str:
    """A readable name of a field's type: `int`, `str or null`, `one of a, b`, `map of str to str`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(str(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if arg is type(None) else type_name(arg) for arg in args)
    if origin is dict:
        return f"map of {type_name(args[0])} to {type_name(args[1])}"
    if origin is list:
        return f"list of {type_name(args[0])}"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default if field.default_factory is None else field.default_factory()
    if isinstance(value, BaseModel):
        return "section"
    return json.dumps(value) if not isinstance(value, str) else value


def source_comments(model: type[BaseModel]) -> dict[str, str]:
    """The `# ...` lines right above each field in the model's source: the code's own explanation."""
    lines = inspect.getsource(model).splitlines()
    comments: dict[str, str] = {}
    tree = ast.parse(textwrap.dedent("\n".join(lines)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node in body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above: list[str] = []
            index = node.lineno - 2
            while index >= 0 and lines[index].strip().startswith("#"):
                above.insert(0, lines[index].strip().lstrip("#").strip())
                index -= 1
            if above:
                comments[node.target.id] = " ".join(above)
    return comments


def config_keys(model: type[BaseModel] = AppConfig, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, comment or description) of every setting, sections expanded, in declaration order."""
    rows: list[tuple[str, str, str, str]] = []
    comments = source_comments(model)
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        nested = typing.get_args(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(config_keys(annotation, f"{key}."))
            continue
        explanation = field.description or comments.get(name, "")
        rows.append((key, type_name(annotation), default_text(field), explanation))
        if typing.get_origin(annotation) is dict and isinstance(nested[1], type) and issubclass(nested[1], BaseModel):
            rows.extend(config_keys(nested[1], f"{key}.<key>."))
    return rows


def documented_rows(text: str) -> dict[str, dict[str, str]]:
    if BEGIN not in text or END not in text:
        return {}
    block = text[text.index(BEGIN) + len(BEGIN) : text.index(END)]
    return {m["key"]: m.groupdict() for line in block.splitlines() if (m := ROW.match(line.strip()))}


def render(text: str) -> str:
    """The document with its generated table brought up to date (meanings kept)."""
    documented = documented_rows(text)
    lines = [BEGIN, HEADER]
    for key, kind, default, comment in config_keys():
        meaning = documented.get(key, {}).get("meaning") or comment or "(describe this key)"
        lines.append(f"| `{key}` | `{kind}` | `{default}` | {meaning} |")
    lines.append(END)
    table = "\n".join(lines)
    if BEGIN in text and END in text:
        return text[: text.index(BEGIN)] + table + text[text.index(END) + len(END) :]
    return text.rstrip("\n") + "\n\n" + table + "\n"


def test_every_key_is_documented_with_its_type_and_default() -> None:
    documented = documented_rows(DOC.read_text())
    expected = {key: (f"`{kind}`", f"`{default}`") for key, kind, default, _ in config_keys()}
    missing = sorted(set(expected) - set(documented))
    stale = sorted(set(documented) - set(expected))
    changed = sorted(
        f"{key}: documented {documented[key]['type']} {documented[key]['default']}, code {kind} {default}"
        for key, (kind, default) in expected.items()
        if key in documented and (documented[key]["type"], documented[key]["default"]) != (kind, default)
    )
    hint = "regenerate: .venv/bin/python tests/unit/test_config_docs.py --write"
    assert not missing, f"keys missing from {DOC.name}: {missing}; {hint}"
    assert not stale, f"keys documented but not in config.py: {stale}; {hint}"
    assert not changed, f"types or defaults differ: {changed}; {hint}"


def test_every_key_has_a_meaning() -> None:
    documented = documented_rows(DOC.read_text())
    unexplained = sorted(key for key, row in documented.items() if row["meaning"] in {"", "(describe this key)"})
    assert not unexplained, f"keys without a meaning in {DOC.name}: {unexplained}"


def test_the_document_is_what_the_generator_writes() -> None:
    text = DOC.read_text()
    assert render(text) == text, "regenerate: .venv/bin/python tests/unit/test_config_docs.py --write"


def test_type_and_default_rendering() -> None:
    class Sample(BaseModel):
        # Explained by a comment.
        mode: typing.Literal["a", "b"] = "a"
        limit: int | None = None
        extra: dict[str, str] = {}

    assert config_keys(Sample) == [
        ("mode", "one of a, b", "a", "Explained by a comment."),
        ("limit", "int or null", "null", ""),
        ("extra", "map of str to str", "{}", ""),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Check (default) or rewrite (--write) the generated configuration table of docs/configuration.md."
    )
    parser.add_argument("--write", action="store_true", help="rewrite the table from jobs/pipeline/config.py")
    args = parser.parse_args(argv)
    text = DOC.read_text()
    updated = render(text)
    if args.write:
        DOC.write_text(updated)
        print(f"wrote {DOC.relative_to(REPO_ROOT)}")
        return 0
    if updated != text:
        print(f"{DOC.relative_to(REPO_ROOT)} is out of date: run with --write", file=sys.stderr)
        return 1
    print(f"{DOC.relative_to(REPO_ROOT)} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
