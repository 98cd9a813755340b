"""mkdocs hook: replaces ``<!-- params-table -->`` in a page with the table of every params key, generated at build
time from the params model (``eps.params.params_model``), so the reference can never fall behind the code.

Each row: the dotted key, its type, its default and its bounds, as pydantic declares them in the settings class next
to the code that reads the key (the class is named in each section's heading).
"""
from __future__ import annotations

import json
import re

from pydantic import BaseModel

MARKER = "<!-- params-table -->"


def _is_model(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _type(ann) -> str:
    text = getattr(ann, "__name__", None) if isinstance(ann, type) else None
    text = (text or str(ann)).replace("typing.", "")
    # an element constraint (list[Annotated[int, FieldInfo(...)]]) reads as its base type here
    text = re.sub(r"Annotated\[(\w+), FieldInfo\(.*?metadata=\[.*?\]\)\]", r"\1", text)
    return text.replace("|", "\\|")


def _bounds(field) -> str:
    parts = []
    for meta in field.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(meta, attr, None)
            # the ±3.4e38 bounds every float carries (finite in float32) say nothing a reader needs
            if value is not None and not (isinstance(value, float) and abs(value) > 1e38):
                parts.append(f"{sign} {'2^63' if value == 2**63 else value}")
    return ", ".join(parts)


def _default(field) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return ""
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return ""
    text = json.dumps(value, default=str)
    return f"`{text}`" if len(text) < 60 else f"`{text[:57]}...`"


def _rows(model: type[BaseModel], prefix: str):
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        if _is_model(field.annotation):
            continue
        yield f"| `{key}` | {_type(field.annotation)} | {_default(field)} | {_bounds(field)} |"


def _section(model: type[BaseModel], prefix: str, title: str, level: int):
    doc = " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())
    rows = list(_rows(model, prefix))
    out = [f"{'#' * level} `{title}`", "", f"`{model.__module__}.{model.__qualname__}`: {doc}", ""]
    if rows:
        out += ["| key | type | default | bounds |", "|---|---|---|---|", *rows, ""]
    for name, field in model.model_fields.items():
        if _is_model(field.annotation):
            key = field.alias or name
            out += _section(field.annotation, f"{prefix}{key}.", f"{prefix}{key}", level + (1 if level < 3 else 0))
    return out


def table() -> str:
    from eps.params import params_model
    return "\n".join(_section(params_model(), "", "top level", 2))


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, table())
