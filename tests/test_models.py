"""Networks, losses, training (learning, determinism, resume after SIGKILL) and the baselines,
on small synthetic feature sets with a planted signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from chorus import MOODS
from chorus.errors import StaleFeaturesError
from chorus.families import CATALOGUE, resolve_candidates, task_targets, train_candidate
from chorus.label_tasks import MultiLabelTruth
from chorus.models.nets import (
    CRNN,
    CRNNH,
    PaperCNN,
    PretextCNN,
    ShortChunkCNN,
    balance_loss,
    quantisation_loss,
    select_maps_by_variance,
)
from synthetic import feature_settings, synthetic, train_settings

TESTS = Path(__file__).parent


def test_paper_cnn_is_the_article_network():
    net = PaperCNN(6)
    assert tuple(net.conv1.weight.shape) == (5, 1, 5, 5) and tuple(net.conv2.weight.shape) == (10, 5, 5, 5)
    x = torch.randn(3, 1, 128, 128)  # the stored map is pooled to 64x64
    assert tuple(net.embed(x).shape) == (3, 1690)  # 10 x 13 x 13
    assert tuple(net(x).shape) == (3, 6)
    assert tuple(PaperCNN(4, in_channels=3)(torch.randn(2, 3, 64, 64)).shape) == (2, 4)


@pytest.mark.parametrize("net", [ShortChunkCNN(5, 3, (8, 16, 16)), ShortChunkCNN(5, 1, (8, 16), residual=True),
                                 CRNN(5, 3, (8, 16)), PretextCNN([3, 4], 3, (8, 16))])
def test_networks_take_any_segment_length(net):
    channels = net.trunk.blocks[0].conv[0].in_channels if isinstance(net, PretextCNN) else net.blocks[0].conv[0].in_channels
    net.eval()
    for frames in (32, 57):
        out = net(torch.randn(2, channels, 32, frames))
        assert out.shape[0] == 2 and out.shape[1] in (5, 7)
        assert net.embed(torch.randn(2, channels, 32, frames)).shape == (2, net.embedding_size)


def test_crnnh_reads_selected_maps_of_each_layer_and_gives_k_bit_codes():
    trunk = ShortChunkCNN(1, 1, (8, 16, 16))
    selected = [torch.tensor([0, 3]), torch.tensor([1, 2, 5]), torch.tensor([4])]
    net = CRNNH(trunk, selected, bits=16, n_classes=3, pooled=2).eval()
    x = torch.randn(4, 1, 32, 32)
    assert net.layer_sequence(x).shape[:2] == (4, 3)  # one step per conv layer
    relaxed = net(x)
    assert relaxed.shape == (4, 16) and bool((relaxed.abs() < 1).all())
    assert set(net.codes(x).unique().tolist()) <= {-1.0, 1.0}
    assert all(not p.requires_grad for p in net.trunk.parameters())  # frozen backbone


def test_map_selection_keeps_the_highest_variance_maps():
    trunk = ShortChunkCNN(1, 1, (8, 8)).eval()
    bn = trunk.blocks[0].conv[1]
    with torch.no_grad():
        bn.weight.zero_()  # every map of layer 1 constant ...
        bn.weight[[3, 5]] = torch.tensor([2.0, 5.0])  # ... except two
    chosen = select_maps_by_variance(trunk, [torch.randn(8, 1, 16, 16)], per_layer=2)
    assert chosen[0].tolist() == [3, 5]
    assert len(chosen) == 2 and len(chosen[1]) == 2


def _minimise(loss_of_codes, raw, steps=200):
    optimiser = torch.optim.Adam([raw], lr=0.05)
    for _ in range(steps):
        optimiser.zero_grad()
        loss_of_codes(torch.tanh(raw)).backward()
        optimiser.step()


def test_quantisation_and_balance_terms_move_codes_as_intended():
    assert quantisation_loss(torch.tensor([[1.0, -1.0]])) == 0 and balance_loss(torch.ones(4, 3)) == 1
    torch.manual_seed(0)
    raw = torch.randn(64, 16, requires_grad=True)
    start_q = quantisation_loss(torch.tanh(raw)).item()
    _minimise(quantisation_loss, raw)
    assert quantisation_loss(torch.tanh(raw)).item() < start_q / 3  # pulled towards +-1

    skewed = (torch.randn(64, 16) + 1.5).requires_grad_(True)  # most bits +1
    start_b = balance_loss(torch.tanh(skewed)).item()
    _minimise(balance_loss, skewed)
    assert balance_loss(torch.tanh(skewed)).item() < start_b / 10  # each bit's mean near 0


def _train(name: str, settings=None, deps=None, checkpoint=None, on_epoch=None, **data):
    features, tracks = synthetic(**data)
    settings = settings or train_settings()
    spec = CATALOGUE[name]
    moods = MultiLabelTruth(list(MOODS), {t: [m] for t, m in zip(tracks["track_id"], tracks["mood"], strict=True)})
    targets = task_targets(spec.task, tracks, settings, moods)
    return train_candidate(spec, features, feature_settings(), targets, settings, deps, checkpoint, on_epoch)


@pytest.mark.parametrize("name", ["paper_cnn", "short_chunk", "crnn"])
def test_single_label_models_learn(name):
    trained = _train(name, train_settings(epochs=8, learning_rate=1e-2))
    losses = [h["train_loss"] for h in trained.history]
    assert losses[-1] < losses[0]
    assert trained.summary["valid_score"] > 1 / 3 + 0.2  # three classes: chance is 1/3


def test_mood_tagger_beats_the_prevalence_baseline():
    trained = _train("mood_tagger", train_settings(epochs=8, learning_rate=1e-2))
    assert trained.scorer.contract.kind == "multi" and trained.scorer.contract.labels == list(MOODS)
    assert trained.summary["valid_score"] > 0.6  # prevalence baseline: 1/3 over the three moods present


def test_backbone_then_hashing_and_transfer():
    settings = train_settings(epochs=4, backbone={"epochs": 3, "channels": (8, 16), "tasks": ["style", "mood"]},
                              hashing={"maps_per_layer": 4})
    backbone = _train("backbone", settings)
    assert backbone.scorer.contract.kind == "pretext" and len(backbone.scorer.contract.labels) == 6
    crnnh = _train("crnnh_32", settings, deps={"backbone": backbone.scorer})
    assert [len(s) for s in crnnh.params["selected_maps"]] == [4, 4]
    codes = crnnh.scorer.scores(synthetic()[0].stacked()[:5])
    assert codes.shape == (5, 32) and set(np.unique(codes)) <= {-1.0, 1.0}
    frozen = _train("transfer_frozen", settings, deps={"backbone": backbone.scorer})
    before = backbone.scorer.net.trunk.blocks[0].conv[0].weight
    assert torch.equal(frozen.scorer.net.trunk.blocks[0].conv[0].weight, before)
    assert frozen.params["trainable_parameters"] < frozen.params["parameters"]


def test_candidates_resolve_dependencies_first():
    names = [s.name for s in resolve_candidates(["cnn_elm", "crnnh_32", "paper_cnn"])]
    assert names == ["paper_cnn", "cnn_elm", "backbone", "crnnh_32"]
    with pytest.raises(ValueError, match="unknown candidate"):
        resolve_candidates(["resnet9000"])


def test_same_seed_same_metrics_and_weights():
    settings = train_settings(epochs=3, precision="auto", threads=1)
    a, b = _train("short_chunk", settings), _train("short_chunk", settings)
    strip = [{k: v for k, v in h.items() if k not in ("samples_per_s", "loader_share")} for h in a.history]
    assert strip == [{k: v for k, v in h.items() if k not in ("samples_per_s", "loader_share")} for h in b.history]
    for (ka, va), (_, vb) in zip(a.scorer.state_dict().items(), b.scorer.state_dict().items(), strict=True):
        assert torch.equal(va, vb), ka


_KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_models import _train
from synthetic import train_settings

def on_epoch(row):
    if row["epoch"] == 3:  # before epoch 3's checkpoint is written
        os.kill(os.getpid(), signal.SIGKILL)

_train("short_chunk", train_settings(epochs=5), checkpoint=Path({checkpoint!r}), on_epoch=on_epoch)
"""


def test_killed_run_resumes_to_the_same_weights_and_metrics(tmp_path):
    checkpoint = tmp_path / "short_chunk.pt"
    script = _KILLED_RUN.format(tests=str(TESTS), checkpoint=str(checkpoint))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(TESTS)})
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert checkpoint.exists()
    resumed = _train("short_chunk", train_settings(epochs=5), checkpoint=checkpoint)
    assert resumed.summary["resumed_from_epoch"] == 2
    straight = _train("short_chunk", train_settings(epochs=5))
    keep = ("epoch", "train_loss", "valid_score", "learning_rate")
    assert [{k: h[k] for k in keep} for h in resumed.history] == [{k: h[k] for k in keep} for h in straight.history]
    for (name, va), (_, vb) in zip(resumed.scorer.state_dict().items(), straight.scorer.state_dict().items(), strict=True):
        assert torch.equal(va, vb), name


def test_scorer_refuses_features_of_another_configuration():
    trained = _train("paper_cnn", train_settings(epochs=1))
    trained.scorer.contract.check_features("synthetic-hash")
    with pytest.raises(StaleFeaturesError, match="re-extract"):
        trained.scorer.contract.check_features("another-hash")
    with pytest.raises(ValueError, match="expects"):
        trained.scorer.scores(np.zeros((2, 1, 32, 32), np.float32))  # one map where three are stored


def test_level_and_noise_augmentation_acts_like_gain_and_white_noise():
    from chorus.training import level_and_noise, noise_bank

    rng = np.random.default_rng(0)
    x = rng.normal(-50, 10, (8, 3, 16, 20)).astype(np.float32)
    x[:, :, :4] = -100.0  # digital silence in the lowest bands
    bank = noise_bank((3, 16, 20), 4, seed=0)
    gained = level_and_noise(x.copy(), np.random.default_rng(1), 6.0, 0.0, (20.0, 20.0), -100.0, bank)
    shift = (gained - x)[:, :, 4:]
    assert np.allclose(shift, shift[:, :1, :1, :1], atol=1e-4)  # one level change per example
    assert np.abs(shift).max() <= 6.0 + 1e-4 and np.ptp(shift[:, 0, 0, 0]) > 1.0
    assert (gained[:, :, :4] == -100.0).all()  # silence stays silent
    noisy = level_and_noise(x.copy(), np.random.default_rng(1), 0.0, 1.0, (20.0, 20.0), -100.0, bank)
    signal, added = 10 ** (x[:, 0] / 10), 10 ** (noisy[:, 0] / 10) - 10 ** (x[:, 0] / 10)
    snr = 10 * np.log10(signal.mean(axis=(1, 2)) / added.mean(axis=(1, 2)))
    assert np.allclose(snr, 20.0, atol=1.5)  # the drawn SNR, against the example's own power
    assert (noisy[:, :, :4] > -100.0).all() and (noisy >= x - 1e-4).all()  # noise only adds power


def test_embeddings_computed_in_one_process_are_read_by_the_next(tmp_path, monkeypatch):
    """A frozen network's segment embeddings kept under the state directory: a later process
    (empty memory, its own store) reads them instead of running the network again, computes only
    segments it has not seen, and recomputes rather than trusts a damaged file."""
    from chorus.models import scorer as scorer_module
    from chorus.models.scorer import Contract, TorchScorer, keep_embeddings_in, remembered_embeddings

    torch.manual_seed(0)
    contract = Contract("style", "single", ["a", "b"], ("logmel",), "f" * 16, "short_chunk")
    scorer = TorchScorer(ShortChunkCNN(2, 1, (4, 8)), contract, [0], np.zeros(1, np.float32), np.ones(1, np.float32))
    x = np.random.default_rng(0).normal(size=(6, 1, 16, 24)).astype(np.float32)
    embedded: list[int] = []
    original = scorer.embed

    def counting(batch, batch_size=None):
        embedded.append(len(batch))
        return original(batch, batch_size)

    monkeypatch.setattr(scorer, "embed", counting)

    def new_process() -> None:
        scorer_module._embeddings.clear()
        keep_embeddings_in(None)
        keep_embeddings_in(tmp_path / "embeddings")

    new_process()
    first = remembered_embeddings(scorer, x[:4])
    new_process()
    second = remembered_embeddings(scorer, x)
    assert embedded == [4, 2]  # only the two segments the first process had not seen
    np.testing.assert_allclose(second[:4], first, rtol=1e-6)
    np.testing.assert_allclose(second, original(x), rtol=1e-5, atol=1e-6)
    for path in (tmp_path / "embeddings").rglob("*.npz"):
        path.write_bytes(b"not an npz")
    new_process()
    remembered_embeddings(scorer, x)
    assert embedded == [4, 2, 6]
    keep_embeddings_in(None)


def test_scores_do_not_depend_on_the_inference_batch():
    """A scorer scores and embeds on a CPU in batches of 32 (the heap keeps their activations);
    what it gives equals one batch of everything."""
    from chorus.models.scorer import INFERENCE_BATCH, Contract, TorchScorer

    torch.manual_seed(0)
    contract = Contract("style", "single", ["a", "b"], ("logmel",), "f" * 16, "short_chunk")
    scorer = TorchScorer(ShortChunkCNN(2, 1, (4, 8)), contract, [0], np.zeros(1, np.float32), np.ones(1, np.float32))
    x = np.random.default_rng(1).normal(size=(70, 1, 16, 24)).astype(np.float32)
    assert INFERENCE_BATCH["cpu"] < len(x)
    np.testing.assert_allclose(scorer.scores(x), scorer.scores(x, batch_size=len(x)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scorer.embed(x), scorer.embed(x, batch_size=len(x)), rtol=1e-5, atol=1e-6)
