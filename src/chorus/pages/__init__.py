"""HTML pages from Jinja2 templates (``templates/*.html.j2``) with autoescaping on: every value a
page shows (file names, tags, model names, settings) is escaped by the template engine, never by
hand."""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


def cell(value: Any) -> str:
    """A table cell's text: floats to three decimals, anything else as its str."""
    return f"{value:.3f}" if isinstance(value, float) else str(value)


@cache
def _environment() -> Environment:
    environment = Environment(loader=PackageLoader("chorus.pages", "templates"),
                              autoescape=select_autoescape(enabled_extensions=("html", "j2"), default=True),
                              undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["cell"] = cell
    return environment


def render_page(template: str, **context: Any) -> str:
    """The page ``template`` (a file under ``chorus/pages/templates``) filled with ``context``."""
    return _environment().get_template(template).render(**context)
