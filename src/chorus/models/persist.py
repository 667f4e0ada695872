"""A scorer as a folder that loads without unpickling anything: ``scorer.json`` (the contract and
how to build the scorer), the network's weights as safetensors, a scikit-learn estimator as a
skops file whose every type must be one skops trusts or one of ``ESTIMATOR_TYPES``. Only networks registered with
``chorus.models.blueprint.register_network`` are built: import ``chorus.families`` (every
family's networks) before loading. This folder is what the registry
stores as a model's artifact; loading it never runs code from it.

Layout::

    scorer.json           {"format", "type": "torch" | "sklearn", "contract", ...}
    weights.safetensors   torch: the network, its channels and normalisation
    estimator.skops       sklearn: the fitted estimator
    featuriser/           sklearn on a network's embedding: that network's scorer folder
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file, save_file

from chorus.errors import UnsafeModelError
from chorus.models import nets  # noqa: F401  (registers the built-in networks)
from chorus.models.blueprint import NETWORKS, blueprint_of, build
from chorus.models.scorer import Contract, EmbeddingFeaturiser, MfccFeaturiser, Scorer, SklearnScorer, TorchScorer

FORMAT = 1  # of scorer.json; part of every candidate's training key
SCORER_FILE = "scorer.json"
WEIGHTS_FILE = "weights.safetensors"
ESTIMATOR_FILE = "estimator.skops"
FEATURISER_FOLDER = "featuriser"

# The types a stored estimator may hold beyond those skops trusts itself (its scikit-learn, numpy
# and scipy defaults): what chorus's sklearn families build (tests/test_model_storage.py fits each
# and checks, a constant label included). A whole library by prefix would admit any of its callables (numpy.save
# in a FunctionTransformer), so any other type is refused.
ESTIMATOR_TYPES = frozenset({
    "chorus.baselines.ELMClassifier", "chorus.baselines.ItqHasher",
    "imblearn.over_sampling._smote.base.SMOTE", "imblearn.pipeline.Pipeline",
    "sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration",
    "sklearn.metrics._dist_metrics.EuclideanDistance64", "sklearn.neighbors._kd_tree.KDTree",
    "skmultilearn.cluster.random.RandomLabelSpaceClusterer", "skmultilearn.ensemble.partition.LabelSpacePartitioningClassifier",
    "skmultilearn.ensemble.rakeld.RakelD", "skmultilearn.problem_transform.lp.LabelPowerset",
    # what the same estimators hold on some data: one-vs-rest's stand-in for a label with one class in
    # training, and the sparse matrices RAkEL's label spaces may be stored in (data, not callables)
    "sklearn.multiclass._ConstantPredictor", "scipy.sparse._csr.csr_matrix", "scipy.sparse._csc.csc_matrix",
    "scipy.sparse._lil.lil_matrix", "scipy.sparse._coo.coo_matrix",
})


def save_scorer(scorer: Scorer, folder: Path) -> Path:
    """Writes ``scorer`` into ``folder`` (created; must be empty or absent) and returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    description: dict[str, Any] = {"format": FORMAT, "contract": asdict(scorer.contract)}
    if isinstance(scorer, TorchScorer):
        description |= {"type": "torch", "network": blueprint_of(scorer.net), "channels": scorer.channels.tolist()}
        save_file({k: (v.float() if v.is_floating_point() else v).detach().cpu().contiguous()
                   for k, v in scorer.state_dict().items()}, str(folder / WEIGHTS_FILE))
    else:
        import skops.io

        description |= {"type": "sklearn", "featuriser": _featuriser_description(scorer.featuriser, folder)}
        skops.io.dump(scorer.estimator, folder / ESTIMATOR_FILE)
    (folder / SCORER_FILE).write_text(json.dumps(description, indent=2))
    return folder


def _featuriser_description(featuriser: Any, folder: Path) -> dict[str, Any]:
    if isinstance(featuriser, MfccFeaturiser):
        return {"type": "mfcc", "logmel_channel": featuriser.logmel_channel, "n_mfcc": featuriser.n_mfcc}
    if isinstance(featuriser, EmbeddingFeaturiser):
        save_scorer(featuriser.scorer, folder / FEATURISER_FOLDER)
        return {"type": "embedding"}
    raise TypeError(f"cannot store a featuriser of type {type(featuriser).__name__}")


def load_scorer_folder(folder: Path) -> Scorer:
    """The scorer ``save_scorer`` wrote, rebuilt from JSON, safetensors and an allow-listed skops
    file. Raises ``UnsafeModelError`` for anything else (a pickle, an unknown type or network)."""
    described = folder / SCORER_FILE
    if not described.is_file():
        raise UnsafeModelError(f"{folder}: no {SCORER_FILE}; not a model chorus stored without pickle "
                               "(a model registered by an older chorus: retrain it)")
    description = json.loads(described.read_text())
    if description.get("format") != FORMAT:
        raise UnsafeModelError(f"{described}: format {description.get('format')!r}, expected {FORMAT}")
    contract = Contract(**{**description["contract"], "stored_maps": tuple(description["contract"]["stored_maps"])})
    if description["type"] == "torch":
        return _load_torch(folder, description, contract)
    if description["type"] == "sklearn":
        featuriser = _load_featuriser(folder, description["featuriser"])
        return SklearnScorer(featuriser, _load_estimator(folder / ESTIMATOR_FILE), contract)
    raise UnsafeModelError(f"{described}: unknown scorer type {description['type']!r}")


def _load_torch(folder: Path, description: dict[str, Any], contract: Contract) -> TorchScorer:
    try:
        net = build(description["network"], NETWORKS)
    except (ValueError, TypeError) as error:
        raise UnsafeModelError(f"{folder / SCORER_FILE}: {error}") from error
    channels = description["channels"]
    blank = np.zeros(len(channels), np.float32)
    scorer = TorchScorer(net, contract, channels, blank, blank)
    scorer.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return scorer.eval()


def _load_featuriser(folder: Path, description: dict[str, Any]) -> Any:
    if description["type"] == "mfcc":
        return MfccFeaturiser(int(description["logmel_channel"]), int(description["n_mfcc"]))
    if description["type"] == "embedding":
        network = load_scorer_folder(folder / FEATURISER_FOLDER)
        if not isinstance(network, TorchScorer):
            raise UnsafeModelError(f"{folder / FEATURISER_FOLDER}: an embedding featuriser must be a network")
        return EmbeddingFeaturiser(network)
    raise UnsafeModelError(f"{folder / SCORER_FILE}: unknown featuriser {description['type']!r}")


def _load_estimator(path: Path) -> Any:
    import skops.io

    untrusted = skops.io.get_untrusted_types(file=path)
    refused = [t for t in untrusted if t not in ESTIMATOR_TYPES]
    if refused:
        raise UnsafeModelError(f"{path}: types outside the allowed ones (chorus.models.persist.ESTIMATOR_TYPES): {refused}")
    return skops.io.load(path, trusted=untrusted)

