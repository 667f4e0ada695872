"""Which chain extracts a track (numpy, or torch on a device), one extractor per process and
configuration; the functions Dask workers run, with a bad file coming back as a problem record."""

from __future__ import annotations

import numpy as np

from chorus.audio import AudioProblem
from chorus.config import FeatureSettings
from chorus.features.blocks import BlockExtractor, is_long
from chorus.features.dsp import FeatureExtractor, TrackFeatures, problem_record, segment_seconds

_EXTRACTORS: dict[tuple[str, str, str], FeatureExtractor] = {}


def extractor_for(settings: FeatureSettings) -> FeatureExtractor:
    """One extractor (filterbank, windows, device tensors) per process and configuration. The numpy
    chain by default; ``features.backend`` torch (or auto, with CUDA) the batched device chain."""
    kind = "numpy"
    if settings.backend != "numpy":
        # torch loads only where its chain is chosen: numpy workers stay light
        from chorus.features import torch_chain

        kind = torch_chain.extractor_kind(settings)
    key = (settings.config_hash(), kind, settings.torch_device)
    if key not in _EXTRACTORS:
        if kind == "torch":
            from chorus.features import (
                torch_chain,  # as above: only where the torch chain runs
            )

            _EXTRACTORS[key] = torch_chain.TorchFeatureExtractor(settings, settings.torch_device)
        else:
            _EXTRACTORS[key] = FeatureExtractor(settings)
    return _EXTRACTORS[key]


def warm_extractor(settings: FeatureSettings) -> None:
    """Build this process's extractor and run it once on a little noise (imports, filterbanks and
    compiled kernels), so that the next file's time is the file's own."""
    samples = int((segment_seconds(settings) + 1.0) * settings.sample_rate)
    noise = np.random.default_rng(0).standard_normal(samples).astype(np.float32) * 1e-2
    extractor_for(settings).from_signal("warm-up", noise)


def uses_device_batches(settings: FeatureSettings) -> bool:
    """Whether files go to the workers ``device_batch`` at a time (decided without touching a device:
    with ``auto`` it is each worker that picks torch or numpy, and numpy takes a batch file by file)."""
    return settings.backend != "numpy"


def extract_track(track_id: str, uri: str, settings: FeatureSettings) -> TrackFeatures:
    """One file's features; a file longer than two ``block_seconds`` goes block by block, so its
    memory does not grow with its length (the numpy chain)."""
    extractor = extractor_for(settings)
    if type(extractor) is FeatureExtractor and settings.block_seconds and is_long(uri, settings.block_seconds):
        return BlockExtractor(extractor, settings.block_seconds).extract(track_id, uri)
    return extractor.extract(track_id, uri)


def extract_track_or_problem(track_id: str, uri: str, settings: FeatureSettings) -> TrackFeatures | dict[str, str]:
    """For Dask workers: a problem comes back as a record instead of killing the shard."""
    try:
        return extract_track(track_id, uri, settings)
    except AudioProblem as problem:
        return problem_record(track_id, uri, problem)


def extract_batch_or_problems(track_ids: list[str], uris: list[str],
                              settings: FeatureSettings) -> list[TrackFeatures | dict[str, str]]:
    """For Dask workers on the device chain: a batch of files, problems as records."""
    return extractor_for(settings).extract_batch(track_ids, uris)
