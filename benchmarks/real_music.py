"""A real-music corpus of our own, from Debian packages that ship music: folder per label (the
label is the package), built once and cached, each package's licence kept beside its audio.

The packages are downloaded with ``apt-get download`` and unpacked with ``dpkg -x`` (nothing is
installed). Only these packages are used: other real corpora are kept aside to judge the work.

    python -m chorus_bench.real_music [CACHE_DIR]   # prints the corpus folder
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from chorus.datasets.candidates import AUDIO_SUFFIXES


@dataclass(frozen=True)
class MusicPackage:
    name: str
    licence: str  # as the package's copyright file states it
    what: str


PACKAGES: tuple[MusicPackage, ...] = (
    MusicPackage("drascula-music", "Drascula licence (BSD-like, DFSG-free)", "adventure game score, Ogg Vorbis"),
    MusicPackage("fretsonfire-songs-muldjord", "CC BY-SA 3.0", "metal songs and guitar stems, Ogg Vorbis"),
    MusicPackage("asc-music", "GPL-2+", "strategy game score, MP3"),
)
DEFAULT_CACHE = Path(os.environ.get("CHORUS_REAL_MUSIC_CACHE", Path.home() / ".cache" / "chorus" / "real-music"))
STAMP = "corpus.json"


def _fetch(package: MusicPackage, work: Path) -> Path:
    """The package unpacked under ``work``: ``apt-get download`` then ``dpkg -x``."""
    done = subprocess.run(["apt-get", "download", package.name], cwd=work, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 and os.geteuid() == 0:  # a fresh machine's package lists may be empty
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
        done = subprocess.run(["apt-get", "download", package.name], cwd=work, capture_output=True, text=True, timeout=600)
    debs = sorted(work.glob(f"{package.name}_*.deb"))
    if done.returncode != 0 or not debs:
        raise RuntimeError(f"apt-get download {package.name} failed: {done.stderr.strip()[-500:]} "
                           "(run `apt-get update` first, or set CHORUS_REAL_MUSIC_CACHE to a built corpus)")
    tree = work / package.name
    subprocess.run(["dpkg", "-x", str(debs[-1]), str(tree)], check=True, timeout=600)
    return tree


def build_corpus(cache: Path = DEFAULT_CACHE) -> Path:
    """``<cache>/corpus/<package>/<file>`` for every audio file of the packages, with
    ``<cache>/LICENSES/<package>.copyright`` and ``<cache>/corpus.json`` (packages, licences,
    files per label). Built once: a corpus whose stamp lists the same packages is reused."""
    corpus = cache / "corpus"
    stamp = cache / STAMP
    wanted = [p.name for p in PACKAGES]
    if stamp.exists() and json.loads(stamp.read_text()).get("packages") == wanted and corpus.is_dir():
        return corpus
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="corpus-", dir=cache))
    files: dict[str, int] = {}
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        for package in PACKAGES:
            tree = _fetch(package, Path(scratch))
            label = staging / package.name
            label.mkdir(parents=True)
            audio = sorted(p for p in tree.rglob("*") if p.is_file() and not p.is_symlink() and p.suffix.lower() in AUDIO_SUFFIXES)
            for path in audio:  # flattened: the stem's folder names the song where files share a name
                name = path.name if sum(a.name == path.name for a in audio) == 1 else f"{path.parent.name}-{path.name}"
                shutil.copy2(path, label / name)
            files[package.name] = len(audio)
            (cache / "LICENSES").mkdir(exist_ok=True)
            shutil.copy2(tree / "usr" / "share" / "doc" / package.name / "copyright", cache / "LICENSES" / f"{package.name}.copyright")
    if corpus.exists():
        shutil.rmtree(corpus)
    staging.rename(corpus)
    (cache / "LICENSES" / "README.md").write_text(
        "# Licences of the real-music corpus\n\n" + "".join(f"- {p.name}: {p.licence} ({p.what}); the package's "
                                                           f"copyright file is {p.name}.copyright\n" for p in PACKAGES))
    stamp.write_text(json.dumps({"packages": wanted, "files": files,
                                 "licences": {p.name: p.licence for p in PACKAGES}}, indent=1))
    return corpus


if __name__ == "__main__":  # pragma: no cover
    print(build_corpus(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CACHE))
