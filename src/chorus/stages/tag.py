"""The tag stage: a registered model's predictions for audio files or folders, to Parquet."""

from __future__ import annotations

from chorus.config import ChorusSettings, stable_hash
from chorus.io import write_parquet
from chorus.stages.context import StageContext, StageSummary
from chorus.stages.inputs import audio_inputs
from chorus.tagging import tag_files


def tag_stage(settings: ChorusSettings, paths: list[str], model: str | None = None, alias: str = "champion",
              out: str | None = None, top_n: int | None = None, threshold: float | None = None) -> StageSummary:
    """Predictions of ``models:/<model>@<alias>`` for audio files or folders, to Parquet
    (default ``<state>/tags/<model>-v<N>-<files digest>.parquet``); ``top_n`` and ``threshold`` as in
    ``chorus.tagging.chosen_labels``. A listener's or a group's
    moods: ``chorus.stages.personal.listener_tag_stage``."""
    ctx = StageContext.open(settings, uses_registry=True, stage="tag")
    name = model or settings.train.model_name
    chosen = ctx.output_file(out) if out else None
    files, digest = audio_inputs(paths)
    table = tag_files(files, name, settings.ingest, alias, top_n, threshold)
    version = int(table["version"].iloc[0])
    target = chosen or ctx.state.tags / f"{name}-v{version}-{stable_hash([digest, top_n, threshold])}.parquet"
    write_parquet(table, target)
    return ctx.summary("tag", False, {"predictions": str(target)},
                       {"files": len(files), "tagged": int(table["problem"].isna().sum()), "model": f"{name} v{version}"})
