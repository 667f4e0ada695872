"""musicnn's pretrained taggers in PyTorch: the checkpoint reader, the port against the original
TensorFlow graph (tests/fixtures/musicnn_reference.npz, made by `make musicnn-reference`), the
front end against librosa's, and the weights' provenance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from chorus.config import FeatureSettings
from chorus.errors import InputError
from chorus.features.dsp import FeatureExtractor, segment
from chorus.pretrained.frontend import musicnn_features, musicnn_input
from chorus.pretrained.tf_checkpoint import CheckpointError, read_index
from chorus.pretrained.weights import MODELS, MUSICNN_WHEEL, load_pretrained, provenance, wheel_path

FIXTURE = Path(__file__).parent / "fixtures" / "musicnn_reference.npz"


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pretrained")


@pytest.mark.parametrize("model", MODELS)
def test_port_reproduces_the_tensorflow_graph(model: str, reference: dict[str, np.ndarray], converted: Path) -> None:
    net = load_pretrained(model, converted)
    with torch.no_grad():
        out = net(torch.from_numpy(reference["patches"]))
    tag_error = float(np.abs(out.taggram.numpy() - reference[f"{model}/taggram"]).max())  # tags in [0, 1]
    penultimate = reference[f"{model}/penultimate"]
    penultimate_error = float(np.abs(out.penultimate.numpy() - penultimate).max() / np.abs(penultimate).max())
    print(f"{model}: largest tag error {tag_error:.1e}, penultimate {penultimate_error:.1e} of its scale")  # pytest -s
    assert tag_error <= 1e-5 and penultimate_error <= 1e-5, (tag_error, penultimate_error)
    for pool in ("max_pool", "mean_pool"):  # musicnn's pooled mid-end features (the transfer embedding)
        if f"{model}/{pool}" in reference:  # float32 rounding, relative to each vector's scale (up to ~100)
            expected = reference[f"{model}/{pool}"]
            error = np.abs(getattr(out, pool).numpy() - expected).max(axis=1)
            assert (error <= 1e-5 * np.abs(expected).max(axis=1)).all(), error
    # the reference tags something: a port with scrambled weights would not match the strong tags
    assert reference[f"{model}/taggram"].max() > 0.3


def test_front_end_equals_the_original_librosa_front_end_in_float32(reference: dict[str, np.ndarray]) -> None:
    settings = musicnn_features(FeatureSettings())
    extractor = FeatureExtractor(settings)
    segments = [segment(extractor.analyse(audio)["logmel"], settings)[0] for audio in reference["audio"]]
    patches = musicnn_input(torch.from_numpy(np.concatenate(segments))).numpy()
    assert patches.shape == reference["patches"].shape
    np.testing.assert_allclose(patches, reference["patches"], rtol=0, atol=1e-4)
    assert np.isfinite(patches).all()


def test_front_end_stays_finite_where_float16_overflows() -> None:
    loud = torch.full((1, 96, 187), 20.0)  # mel power 100: 10000 x overflows float16's 65504
    assert torch.isinf(torch.tensor(10000 * 100.0, dtype=torch.float16))
    patch = musicnn_input(loud)
    assert torch.isfinite(patch).all() and patch.max().item() == pytest.approx(6.0, abs=1e-4)


def test_converted_weights_carry_their_provenance(converted: Path) -> None:
    load_pretrained("MSD_musicnn", converted)
    record = provenance("MSD_musicnn", converted)
    assert record["source"]["wheel_sha256"] == MUSICNN_WHEEL.sha256 and record["source"]["licence"] == "ISC"
    assert "Permission to use" in record["source"]["licence_text"]
    assert record["training_config"]["audio_rep"]["n_mels"] == 96 and len(record["tags"]) == 50
    assert "sad" in record["tags"] and "happy" in record["tags"]


def test_a_wheel_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    wheel = wheel_path()
    shutil.copy(wheel, tmp_path / wheel.name)
    with open(tmp_path / wheel.name, "ab") as f:
        f.write(b"tampered")
    with pytest.raises(InputError, match="is not the pinned"):
        wheel_path(tmp_path)
    with pytest.raises(InputError, match="make setup"):
        wheel_path(tmp_path / "empty")


def test_checkpoint_reader_refuses_what_is_not_a_checkpoint() -> None:
    with pytest.raises(CheckpointError, match="table magic"):
        read_index(json.dumps({"not": "a checkpoint"}).encode() * 4)


def test_fine_tuning_trains_the_mid_end_and_the_new_head_and_keeps_the_front_end(converted: Path,
                                                                                  reference: dict[str, np.ndarray]) -> None:
    from chorus.pretrained.tagger import PretrainedTagger

    torch.manual_seed(0)
    net = PretrainedTagger(load_pretrained("MSD_musicnn", converted), n_out=2, dropout=0.0, tune_midend=True)
    front = {k: v.clone() for k, v in net.net.frontend.state_dict().items()}
    mid = net.net.midend[0].conv.weight.clone()
    # two classes of stored dB maps: the fixture's metal and orchestral patches
    db = 10 * np.log10((10 ** reference["patches"] - 1) / 10000 + 1e-10)
    x = torch.from_numpy(db.transpose(0, 2, 1)[:, None].astype(np.float32))
    y = torch.tensor([0, 0, 1, 1])
    optimiser = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    net.train()
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(front[k], v) for k, v in net.net.frontend.state_dict().items())  # weights and batch statistics
    assert not torch.equal(mid, net.net.midend[0].conv.weight)
    assert net.embed(x).shape == (4, 1506)


def test_crnn_hashing_on_musicnn_reads_its_blocks_and_keeps_its_weights(converted: Path,
                                                                       reference: dict[str, np.ndarray]) -> None:
    """The CRNN hash on musicnn's front end and mid end: one step per front-end branch and
    mid-end layer (what musicnn itself computes), 32-bit codes, musicnn's weights and batch
    statistics unchanged by training, and the hash built again from its blueprint."""
    from chorus.models.blueprint import NETWORKS, blueprint_of, build
    from chorus.models.nets import CRNNH, quantisation_loss, select_maps_by_variance
    from chorus.pretrained.frontend import musicnn_input
    from chorus.pretrained.tagger import MusicnnTrunk

    torch.manual_seed(0)
    musicnn = load_pretrained("MSD_musicnn", converted).eval()
    trunk = MusicnnTrunk(musicnn).eval()
    db = 10 * np.log10((10 ** reference["patches"] - 1) / 10000 + 1e-10)
    x = torch.from_numpy(db.transpose(0, 2, 1)[:, None].astype(np.float32))
    with torch.no_grad():
        maps = trunk.feature_maps(x)
        assert [m.shape[1] for m in maps] == [204, 204, 51, 51, 51, 64, 64, 64]
        whole = musicnn.features(musicnn_input(x[:, 0]))  # front end, then each mid-end layer
        assert torch.allclose(torch.cat([m[:, :, 0] for m in maps], dim=1), whole, atol=1e-5)
    selected = select_maps_by_variance(trunk, [x], per_layer=8)
    net = CRNNH(trunk, selected, bits=32, n_classes=2)
    before = {k: v.clone() for k, v in musicnn.state_dict().items()}
    optimiser = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    net.train()
    y = torch.tensor([0, 0, 1, 1])
    for _ in range(3):
        relaxed = net(x)
        loss = torch.nn.functional.cross_entropy(net.classify(relaxed), y) + 0.1 * quantisation_loss(relaxed)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert all(torch.equal(before[k], v) for k, v in musicnn.state_dict().items())
    codes = net.eval().codes(x)
    assert codes.shape == (4, 32) and set(codes.unique().tolist()) <= {-1.0, 1.0}
    again = build(blueprint_of(net), NETWORKS)
    again.load_state_dict(net.state_dict())
    assert torch.equal(again.eval().codes(x), codes)
