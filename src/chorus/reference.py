"""Pinned naive reference implementations: what the obvious code computes, kept so that tests and
benchmarks compare chorus's fast paths against it (values and speed) in the same run."""

from __future__ import annotations

from typing import Any

import numpy as np

from chorus.config import FeatureSettings


def naive_feature_maps(path: str, settings: FeatureSettings) -> dict[str, np.ndarray]:
    """The obvious per-clip librosa chain, librosa defaults except the settings chorus shares:
    load at the analysis rate, one STFT, mel power of |STFT|^2, ``librosa.decompose.hpss`` on the
    same STFT and the mel of each part, power_to_db with the fixed reference, MFCC from the log-mel.
    """
    import librosa

    y, _ = librosa.load(path, sr=settings.sample_rate, mono=True)
    stft = librosa.stft(y, n_fft=settings.n_fft, hop_length=settings.hop_length)

    def log_mel(spectrum: np.ndarray) -> np.ndarray:
        mel = librosa.feature.melspectrogram(
            S=np.abs(spectrum) ** 2, sr=settings.sample_rate, n_fft=settings.n_fft, n_mels=settings.n_mels,
            fmin=settings.fmin, fmax=settings.fmax,
        )
        return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)

    harmonic, percussive = librosa.decompose.hpss(stft, kernel_size=settings.hpss_kernel)
    maps: dict[str, Any] = {"logmel": log_mel(stft), "harmonic": log_mel(harmonic), "percussive": log_mel(percussive)}
    maps["mfcc"] = librosa.feature.mfcc(S=maps["logmel"], n_mfcc=settings.n_mfcc)
    return maps


def naive_personal_truth(graph: Any, tag_rows: Any, target: Any, max_depth: int, weights: Any) -> Any:
    """The obvious personal vote for one target: networkx BFS with cutoff, then a pandas groupby
    of the reached users' (user, song, mood) rows. Returns (song, mood) -> score as a Series."""
    import networkx as nx
    import pandas as pd

    reached = nx.single_source_shortest_path_length(graph, target, cutoff=max_depth)
    reached.pop(target, None)
    if not reached:
        return pd.Series(dtype=float)
    hops = pd.DataFrame({"user": list(reached), "w": [weights[d - 1] for d in reached.values()]})
    rows = tag_rows.merge(hops, on="user")
    numerator = rows.groupby(["song", "mood"])["w"].sum()
    denominator = rows.drop_duplicates(["user", "song"]).groupby("song")["w"].sum()
    return numerator / denominator.reindex(numerator.index.get_level_values("song")).to_numpy()
