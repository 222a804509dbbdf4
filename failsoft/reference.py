"""The documentation's reference, made from the code it describes (the docs site's build runs it; tests
check it against the code): every portfolio.toml key from the config Structs (type, default, and the
meaning written beside the field in config/spec.py), every command from the CLI's parser, every metric
from the code that registers it, every endpoint from the OpenAPI document."""

from __future__ import annotations

import argparse
import ast
import inspect
import io
import re
import tokenize
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from failsoft import config

__all__ = ["cli_reference", "config_keys", "config_reference", "endpoints_reference", "metrics_reference"]


# ---- portfolio.toml ----------------------------------------------------------------------------------------


def _field_notes(cls: type) -> dict[str, tuple[str, str, str]]:
    """field -> (annotation, default, meaning) as the class's source writes them: the meaning is the
    comment above the field (consecutive lines) and the one after it on its line."""
    notes: dict[str, tuple[str, str, str]] = {}
    for klass in reversed(cls.__mro__):
        is_struct = isinstance(klass, type) and issubclass(klass, msgspec.Struct)
        if not is_struct or klass.__module__ == "msgspec":
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        lines = source.splitlines()
        comments: dict[int, str] = {}
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
        body = ast.parse(inspect.cleandoc("\n" + source) if source[0] == " " else source).body[0]
        assert isinstance(body, ast.ClassDef)
        for node in body.body:
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            row = node.lineno
            above: list[str] = []
            k = row - 1
            while k in comments and lines[k - 1].strip().startswith("#"):
                above.insert(0, comments[k])
                k -= 1
            after = comments.get(row) if not lines[row - 1].strip().startswith("#") else None
            meaning = " ".join([*above, *([after] if after else [])])
            default = "" if node.value is None else ast.unparse(node.value)
            notes[node.target.id] = (ast.unparse(node.annotation), default, meaning)
    return notes


def _structs(tp: Any) -> list[type]:
    """The config Structs inside a field's type (a table, a list of tables, a union of tier kinds)."""
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return [tp]
    found: list[type] = []
    for arg in typing.get_args(tp):
        found += _structs(arg)
    return found


def _default(cls: type, name: str, written: str) -> str:
    field = next(f for f in msgspec.structs.fields(cls) if f.name == name)
    if field.required:
        return "required"
    if field.default is not msgspec.NODEFAULT:
        if field.default is None:
            return "(none)"
        if isinstance(field.default, bool):
            return str(field.default).lower()
        return repr(field.default).replace("'", '"')
    if "default_factory" in written:
        factory = field.default_factory
        value = factory() if callable(factory) else None
        return "(a table)" if isinstance(value, msgspec.Struct) else repr(value).replace("'", '"')
    return written


def _tables(
    cls: type, path: str = "", seen: dict[type, str] | None = None, also: dict[str, list[str]] | None = None
) -> Iterator[tuple[str, type]]:
    """(title, Struct) of every table of portfolio.toml, each Struct once (its other places go to
    ``also``): ``[server]``, ``[[models.NAME.tiers]] kind = "oip"``, ``[models.NAME.tiers.breaker]``..."""
    seen = {} if seen is None else seen
    also = {} if also is None else also
    title = path or "top level"
    if cls in seen:
        if title != seen[cls] and title not in also.setdefault(seen[cls], []):
            also[seen[cls]].append(title)
        return
    seen[cls] = title
    yield title, cls
    hints = typing.get_type_hints(cls)
    for f in msgspec.structs.fields(cls):
        hint = hints[f.name]
        inner = _structs(hint)
        origin = typing.get_origin(hint)
        base = (path.split(" ")[0].strip("[]") + "." if path else "") + f.name
        for struct in inner:
            if origin is dict:
                yield from _tables(struct, f"[{base}.NAME]", seen, also)
            elif origin is list:
                tag = struct.__struct_config__.tag  # type: ignore[attr-defined]
                kind = f' kind = "{tag}"' if isinstance(tag, str) else ""
                yield from _tables(struct, f"[[{base}]]{kind}", seen, also)
            else:
                yield from _tables(struct, f"[{base}]", seen, also)


def config_keys() -> dict[str, dict[str, tuple[str, str, str]]]:
    """table -> key -> (type, default, meaning), the tables in portfolio.toml's order."""
    out: dict[str, dict[str, tuple[str, str, str]]] = {}
    for table, cls in _tables(config.PortfolioSpec):
        notes = _field_notes(cls)
        hints = typing.get_type_hints(cls)
        keys = {}
        struct_config = cls.__struct_config__  # type: ignore[attr-defined]
        tag_field, tag = struct_config.tag_field, struct_config.tag
        if isinstance(tag_field, str) and isinstance(tag, str):
            keys[tag_field] = ("str", f'"{tag}"', "the tier's kind")
        for f in msgspec.structs.fields(cls):
            if cls is config.PortfolioSpec and f.name in {"base_dir", "file"}:
                continue  # set by the loader, not written in the file
            if _structs(hints[f.name]):
                continue  # a table of its own, listed below
            annotation, written, meaning = notes.get(f.name, ("", "", ""))
            keys[f.encode_name] = (annotation, _default(cls, f.name, written), meaning)
        out[table] = keys
    return out


def config_reference() -> str:
    parts = ["# portfolio.toml\n",
             "Every key the file accepts, made from the config's own types (`failsoft/config/spec.py`): its",
             "type, its default, and what the code says of it. `NAME` stands for a model's name. A key not",
             "here is refused by `failsoft check`, which names the closest key it knows.\n"]  # fmt: skip
    also: dict[str, list[str]] = {}
    classes = dict(_tables(config.PortfolioSpec, also=also))
    for table, keys in config_keys().items():
        cls = classes[table]
        parts.append(f"## `{table}`\n")
        if also.get(table):
            parts.append("Also: " + ", ".join(f"`{a}`" for a in also[table]) + ".\n")
        doc = cls.__doc__ or ""
        if doc and not doc.startswith(cls.__name__ + "("):
            parts.append(re.sub(r"\s+", " ", inspect.cleandoc(doc).split("\n\n")[0]) + "\n")
        parts.append("| key | type | default | meaning |\n|---|---|---|---|")
        for key, (annotation, default, meaning) in keys.items():
            parts.append(f"| `{key}` | {_cell(_type(annotation))} | `{_cell(default)}` | {_cell(meaning)} |")
        parts.append("")
    return "\n".join(parts)


_TYPES = ((r"\bPositiveInt\b", "int > 0"), (r"\bPositiveFloat\b", "float > 0"), (r"\bShare\b", "float 0..1"),
          (r"\bName\b", "name"), (r"\bMetric\b", "metric"),
          (r"Annotated\[(\w+), Meta\(([^)]*)\)\]", r"\1 (\2)"))  # fmt: skip


def _type(annotation: str) -> str:
    """A field's type as a person reads it: ``int > 0``, ``"auto" | "thread"``, ``float (ge=0)``."""
    text = annotation
    for pattern, plain in _TYPES:
        text = re.sub(pattern, plain, text)
    text = re.sub(r"Literal\[([^\]]*)\]", lambda m: m.group(1).replace("'", '"').replace(", ", " | "), text)
    return text.replace(" | None", " (optional)")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# ---- the command line --------------------------------------------------------------------------------------


def cli_reference() -> str:
    from failsoft.cli import parser as make_parser

    parser = make_parser()
    parts = [
        "# The command line\n",
        "Every command of `failsoft`, from its own parser (`failsoft COMMAND --help` says the same).\n",
    ]
    for name, sub in _commands(parser, "failsoft"):
        parts.append(f"## `{name}`\n")
        if sub.description or sub.format_usage():
            parts.append(f"```\n{sub.format_usage().strip()}\n```\n")
        helps = (sub.description or "").strip()
        if helps:
            parts.append(helps + "\n")
        rows = []
        for action in sub._actions:
            hidden = action.help == argparse.SUPPRESS
            if hidden or isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            what = ", ".join(action.option_strings) or action.dest
            helps = action.help or ""
            helps = helps % vars(action) if "%(" in helps else helps
            quiet = action.default in (None, argparse.SUPPRESS, False, "") or not action.option_strings
            default = "" if quiet or "default" in helps else f" (default {action.default})"
            choices = f" One of: {', '.join(map(str, action.choices))}." if action.choices else ""
            rows.append(f"| `{what}` | {_cell(helps)}{choices}{default} |")
        if rows:
            parts.append("| argument | meaning |\n|---|---|")
            parts.extend(rows)
            parts.append("")
        if sub.epilog:
            parts.append(f"```text\n{sub.epilog.strip()}\n```\n")
    return "\n".join(parts)


def _commands(parser: argparse.ArgumentParser, prefix: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                if not sub.description and helps.get(name):
                    sub.description = helps[name]
                subs = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
                if not subs:
                    yield f"{prefix} {name}", sub
                else:
                    yield from _commands(sub, f"{prefix} {name}")


# ---- metrics -----------------------------------------------------------------------------------------------

_FAMILIES = {"CounterMetricFamily": "counter", "GaugeMetricFamily": "gauge",
             "HistogramMetricFamily": "histogram"}  # fmt: skip


def metrics() -> list[tuple[str, str, str, list[str]]]:
    """(name, kind, help, labels) of every metric family the package registers, read from its source."""
    found = []
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id not in _FAMILIES:
                continue
            if len(node.args) < 2:
                continue
            name, helps = (_literal(a) for a in node.args[:2])
            labels = next((k.value for k in node.keywords if k.arg == "labels"), None)
            elements = labels.elts if isinstance(labels, ast.List) else []
            label_names = [str(e.value) for e in elements if isinstance(e, ast.Constant)]
            if name:
                found.append((name, _FAMILIES[node.func.id], helps or "", label_names))
    return sorted(found)


def _literal(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):  # an f-string: its literal parts, the rest as {...}
        return "".join(str(v.value) if isinstance(v, ast.Constant) else "{...}" for v in node.values)
    return None


def metrics_reference() -> str:
    parts = ["# Metrics\n",
             "Every metric on `GET /metrics` (Prometheus' text format), from the code that registers it.",
             "Counters are exposed with `_total`, histograms with `_bucket`, `_sum` and `_count`.\n",
             "| metric | kind | labels | meaning |", "|---|---|---|---|"]  # fmt: skip
    for name, kind, helps, labels in metrics():
        parts.append(f"| `{name}` | {kind} | {', '.join(f'`{x}`' for x in labels)} | {_cell(helps)} |")
    return "\n".join(parts) + "\n"


# ---- the HTTP API ------------------------------------------------------------------------------------------


def endpoints_reference() -> str:
    from failsoft.server import app  # noqa: F401 (every route registered)
    from failsoft.server.openapi import document

    doc = document()
    parts = ["# HTTP endpoints\n",
             "Every endpoint, from the OpenAPI 3.1 document the gateway serves at `GET /openapi.json`",
             "(generate a client in any language from it). The data plane needs no token; a lock marks a",
             "route that needs `Authorization: Bearer TOKEN`.\n"]  # fmt: skip
    for tag in ("data plane", "oip", "control plane", "console"):
        parts.append(f"## {tag}\n\n| method | path | | what it does |\n|---|---|---|---|")
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                if op["tags"] == [tag]:
                    lock = "🔒" if "security" in op else ""
                    parts.append(f"| {method.upper()} | `{path}` | {lock} | {_cell(op['summary'])} |")
        parts.append("")
    return "\n".join(parts)


PAGES = {"reference/config.md": config_reference, "reference/cli.md": cli_reference,
         "reference/metrics.md": metrics_reference, "reference/http.md": endpoints_reference}  # fmt: skip
