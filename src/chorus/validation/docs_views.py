"""Data Docs views that keep their compiled Jinja templates between builds.

GX makes a new Jinja environment for every view of every build, so each build compiled the same
~35 templates again: three quarters of a Data Docs build (0.2 s, at the end of every features
run). These views share one in-memory bytecode cache (Jinja's own mechanism; a bucket's key is
the template's name and source checksum, so a changed template is compiled afresh)."""

from __future__ import annotations

import threading
from typing import Any

from great_expectations.render.view import (
    DefaultJinjaIndexPageView,
    DefaultJinjaPageView,
)
from jinja2 import BytecodeCache
from jinja2.bccache import Bucket


class MemoryBytecodeCache(BytecodeCache):
    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def load_bytecode(self, bucket: Bucket) -> None:
        with self._lock:
            code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: Bucket) -> None:
        code = bucket.bytecode_to_string()
        with self._lock:
            self._code[bucket.key] = code


TEMPLATES = MemoryBytecodeCache()


class CachedJinjaPageView(DefaultJinjaPageView):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env.bytecode_cache = TEMPLATES


class CachedJinjaIndexPageView(DefaultJinjaIndexPageView):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env.bytecode_cache = TEMPLATES


def site_views() -> dict[str, Any]:
    """The parts of a SiteBuilder config that use these views."""
    page = {"module_name": __name__, "class_name": CachedJinjaPageView.__name__}
    return {
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder",
                               "view": {"module_name": __name__, "class_name": CachedJinjaIndexPageView.__name__}},
        "site_section_builders": {name: {"view": page} for name in ("expectations", "validations", "profiling")},
    }
