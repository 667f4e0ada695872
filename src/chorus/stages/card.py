"""The card stage: a model card for one registered version (``chorus card NAME[@ALIAS|/VERSION]``),
written under <state>/reports/cards/ as HTML and markdown (see ``chorus.stages.model_card``)."""

from __future__ import annotations

from chorus import registry
from chorus.config import ChorusSettings
from chorus.errors import InputError
from chorus.stages.context import StageContext, StageSummary
from chorus.stages.model_card import write_card


def card_stage(settings: ChorusSettings, ref: str) -> StageSummary:
    """Writes the card of ``ref`` and returns where."""
    ctx = StageContext.open(settings, uses_registry=True, stage="card")
    name, version_or_alias = registry.parse_model_ref(ref)
    version = registry.alias_version(name, version_or_alias) if isinstance(version_or_alias, str) else version_or_alias
    if version is None:
        raise InputError(ref, f"no version of {name} has the alias {version_or_alias!r}")
    page = write_card(ctx, name, version)
    return ctx.summary("card", False, {"card": str(page), "markdown": str(page.with_suffix(".md"))},
                       {"model": f"{name} v{version}"})
