"""What gets registered: a network or a scikit-learn pipeline wrapped with what it takes to use
it safely. Every candidate of a task takes the same input (a batch of the feature set's stacked
maps, (batch, maps, bands, frames) float32 dB) and gives the same output (class / label
probabilities, or +-1 hash codes), so any of them can be a task's champion and serve alike."""

from __future__ import annotations

import hashlib
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from chorus.errors import StaleFeaturesError
from chorus.io import atomic_path

Kind = Literal["single", "multi", "hash", "pretext"]

# Segments per forward pass when scoring or embedding, by device. On a CPU a batch's activations
# stay within the heap the process keeps (``chorus.compute.tune_process_allocator``): at 256,
# musicnn's front-end maps are gigabytes, handed back and faulted in again at every batch
# (docs/benchmarks.md, "Training"). A GPU's memory is its own and fills better with large batches.
INFERENCE_BATCH = {"cpu": 32}
INFERENCE_BATCH_ELSEWHERE = 256


@dataclass
class Contract:
    """The facts a scorer was trained under: task, output labels, which stored maps it reads,
    and the feature-config hash of the features it was trained on."""

    task: str
    kind: Kind
    labels: list[str]
    stored_maps: tuple[str, ...]
    feature_config_hash: str
    candidate: str

    def check_features(self, config_hash: str) -> None:
        if config_hash != self.feature_config_hash:
            raise StaleFeaturesError(
                f"{self.candidate} was trained on features {self.feature_config_hash}, got features {config_hash}: "
                "re-extract with the model's feature settings or retrain"
            )

    def check_input(self, x: np.ndarray) -> None:
        if x.ndim != 4 or x.shape[1] != len(self.stored_maps):
            raise ValueError(
                f"{self.candidate} expects (batch, {len(self.stored_maps)} maps {list(self.stored_maps)}, bands, frames), "
                f"got shape {tuple(x.shape)}"
            )


class TorchScorer(nn.Module):
    """A network, per-map normalisation, and the contract. ``forward`` takes stored maps
    (batch, stored maps, bands, frames) and picks the channels the network was built for."""

    def __init__(self, net: nn.Module, contract: Contract, channels: list[int], mean: np.ndarray,
                 std: np.ndarray) -> None:
        super().__init__()
        self.net: Any = net  # a chorus network: forward, embed, head
        self.contract = contract
        self.channels: torch.Tensor
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("channels", torch.tensor(channels, dtype=torch.long))
        self.register_buffer("mean", torch.tensor(np.asarray(mean, np.float32)).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(np.asarray(std, np.float32)).view(1, -1, 1, 1))

    def prepare(self, stored: torch.Tensor) -> torch.Tensor:
        return (stored.index_select(1, self.channels) - self.mean) / self.std

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare(stored))

    def forward_selected(self, selected: torch.Tensor) -> torch.Tensor:
        """``forward`` for a batch that holds only this network's channels (training batches are
        cut that way: a one-map model does not copy three)."""
        return self.net((selected - self.mean) / self.std)

    def output_scores(self, output: torch.Tensor) -> torch.Tensor:
        kind = self.contract.kind
        if kind == "single":
            return torch.softmax(output.float(), dim=1)
        if kind == "multi":
            return torch.sigmoid(output.float())
        if kind == "hash":
            return torch.where(output >= 0, 1.0, -1.0)
        return output.float()

    @torch.no_grad()
    def _batched(self, x: np.ndarray, fn: Any, batch_size: int | None) -> np.ndarray:
        self.contract.check_input(x)
        self.eval()
        device = self.mean.device
        batch_size = batch_size or INFERENCE_BATCH.get(device.type, INFERENCE_BATCH_ELSEWHERE)
        out = [fn(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], np.float32)).to(device)).float().cpu().numpy()
               for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def outputs(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """The network's raw outputs (logits, or a hash's real-valued codes), shape (N, outputs)."""
        return self._batched(x, self, batch_size)

    def scores(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        return self._batched(x, lambda b: self.output_scores(self(b)), batch_size)

    def embed(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Penultimate-layer vectors (semantic vectors for cosine retrieval)."""
        return self._batched(x, lambda b: self.net.embed(self.prepare(b)), batch_size)


class SklearnScorer:
    """A scikit-learn estimator over features computed from the stored maps (MFCC statistics of
    the log-mel, or a frozen network's embedding), under the same contract as a network."""

    def __init__(self, featuriser: Any, estimator: Any, contract: Contract) -> None:
        self.featuriser = featuriser
        self.estimator = estimator
        self.contract = contract

    def features(self, x: np.ndarray) -> np.ndarray:
        self.contract.check_input(x)
        return self.featuriser(x)

    def scores(self, x: np.ndarray) -> np.ndarray:
        feats = self.features(x)
        if self.contract.kind == "hash":  # an unsupervised hasher of the features: +-1 codes
            return np.asarray(self.estimator.transform(feats), np.float32)
        if self.contract.kind == "multi":
            probs = self.estimator.predict_proba(feats)
            return np.asarray(probs.toarray() if hasattr(probs, "toarray") else probs, np.float32)
        return np.asarray(self.estimator.predict_proba(feats), np.float32)

    def embed(self, x: np.ndarray) -> np.ndarray:
        return self.features(x)


class MfccFeaturiser:
    """MFCC (DCT-II of the log-mel, as librosa.feature.mfcc) and first/second deltas of each
    segment, mean and std: the classic baselines' input, computed from the same stored tensor
    every other candidate reads."""

    def __init__(self, logmel_channel: int, n_mfcc: int) -> None:
        self.logmel_channel = logmel_channel
        self.n_mfcc = n_mfcc

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import librosa

        logmel = x[:, self.logmel_channel]  # (batch, bands, frames)
        mfcc = librosa.feature.mfcc(S=logmel, n_mfcc=self.n_mfcc)
        parts = [mfcc, librosa.feature.delta(mfcc, order=1), librosa.feature.delta(mfcc, order=2)]
        stats = [f(p, axis=-1) for p in parts for f in (np.mean, np.std)]
        return np.concatenate(stats, axis=1).astype(np.float32)


class EmbeddingFeaturiser:
    """A trained network's penultimate layer (e.g. the paper CNN's 1,690 features, musicnn's
    pooled mid end). Within a process each segment's embedding is computed once per network
    (keyed by the weights' and the segment's content), so the candidates built on one network,
    and the stages that score them, share it."""

    def __init__(self, scorer: TorchScorer) -> None:
        self.scorer = scorer

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return remembered_embeddings(self.scorer, x)


EMBEDDINGS_REMEMBERED = 100_000  # segments; about 600 MB of musicnn embeddings at most
_embeddings: OrderedDict[tuple[str, bytes], np.ndarray] = OrderedDict()
_fingerprints: weakref.WeakKeyDictionary[TorchScorer, str] = weakref.WeakKeyDictionary()


class EmbeddingStore:
    """Embeddings on disk, shared by the processes of one state directory (train, evaluate and
    index in separate runs): under ``folder/<weights fingerprint>/``, one ``.npz`` of segment
    digests (N, 16) uint8 and embeddings (N, dims) float32 per batch computed, written
    atomically and read without pickle. Files of other processes are read as they appear."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._read: set[Path] = set()

    def load_new(self, weights: str) -> dict[tuple[str, bytes], np.ndarray]:
        """The embeddings of files under ``weights`` not read before by this store."""
        found: dict[tuple[str, bytes], np.ndarray] = {}
        for path in sorted((self.folder / weights).glob("*.npz")):
            if path in self._read:
                continue
            self._read.add(path)
            try:
                with np.load(path, allow_pickle=False) as data:
                    found.update(((weights, key.tobytes()), vector) for key, vector in zip(data["keys"], data["values"],
                                                                                        strict=True))
            except (OSError, ValueError, KeyError):  # a damaged file is computed again, never trusted
                continue
        return found

    def save(self, weights: str, fresh: dict[tuple[str, bytes], np.ndarray]) -> None:
        keys = np.frombuffer(b"".join(key for _, key in fresh), np.uint8).reshape(len(fresh), -1)
        path = self.folder / weights / f"{uuid.uuid4().hex}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, tmp.open("wb") as handle:
            np.savez(handle, keys=keys, values=np.stack(list(fresh.values())).astype(np.float32))
        self._read.add(path)


_store: EmbeddingStore | None = None


def keep_embeddings_in(folder: Path | None) -> None:
    """Where ``remembered_embeddings`` also keeps what it computes (None: in memory only)."""
    global _store
    if folder is None or _store is None or _store.folder != folder:
        _store = EmbeddingStore(folder) if folder is not None else None


def _fingerprint(scorer: TorchScorer) -> str:
    if scorer not in _fingerprints:
        digest = hashlib.blake2b(digest_size=16)
        for name, tensor in sorted(scorer.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        _fingerprints[scorer] = digest.hexdigest()
    return _fingerprints[scorer]


def remembered_embeddings(scorer: TorchScorer, x: np.ndarray) -> np.ndarray:
    """``scorer.embed(x)``, computing only the segments not embedded before in this process or,
    with ``keep_embeddings_in``, by another process of the same state directory."""
    if len(x) == 0:
        return scorer.embed(x)
    weights = _fingerprint(scorer)
    keys = [(weights, hashlib.blake2b(np.ascontiguousarray(segment).tobytes(), digest_size=16).digest()) for segment in x]
    missing = [i for i, key in enumerate(keys) if key not in _embeddings]
    if missing and _store is not None:
        _embeddings.update(_store.load_new(weights))
        missing = [i for i in missing if keys[i] not in _embeddings]
    fresh = dict(zip([keys[i] for i in missing], scorer.embed(x[missing]), strict=True)) if missing else {}
    if fresh and _store is not None:
        _store.save(weights, fresh)
    out = np.stack([fresh[key] if key in fresh else _embeddings[key] for key in keys])
    _embeddings.update(fresh)
    while len(_embeddings) > EMBEDDINGS_REMEMBERED:
        _embeddings.popitem(last=False)
    return out


# What the registry loads and every stage scores with: a network or a scikit-learn estimator,
# both under a ``Contract``, both with ``scores`` and ``embed``.
Scorer = TorchScorer | SklearnScorer
