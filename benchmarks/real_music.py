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
import zipfile
from dataclasses import dataclass
from pathlib import Path

from chorus.audio import AUDIO_SUFFIXES


@dataclass(frozen=True)
class MusicPackage:
    name: str
    licence: str  # as the package's copyright file states it
    what: str
    music: str = ""  # the package's music folder (its sound effects stay out); empty: every audio file
    label: str = ""  # the corpus folder it goes to; empty: the package's name

    @property
    def folder(self) -> str:
        return self.label or self.name


# The test tier's corpus: small, three formats of behaviour (Vorbis, stems, MP3).
PACKAGES: tuple[MusicPackage, ...] = (
    MusicPackage("drascula-music", "Drascula licence (BSD-like, DFSG-free)", "adventure game score, Ogg Vorbis"),
    MusicPackage("fretsonfire-songs-muldjord", "CC BY-SA 3.0", "metal songs and guitar stems, Ogg Vorbis"),
    MusicPackage("asc-music", "GPL-2+", "strategy game score, MP3"),
)
# The transfer benchmark's corpus: five labels (the game each score was written for; both
# Frets on Fire song packages are one label), game music only, no sound effects.
TRANSFER_PACKAGES: tuple[MusicPackage, ...] = (
    MusicPackage("drascula-music", "Drascula licence (BSD-like, DFSG-free)", "adventure game score, Ogg Vorbis"),
    MusicPackage("hyperrogue-music", "GPL-2+", "puzzle game score, Ogg Vorbis", music="usr/share/hyperrogue/music"),
    MusicPackage("nexuiz-music", "GPL-2+", "shooter soundtrack, Ogg Vorbis in a pk3 archive",
                 music="usr/share/games/nexuiz/data"),
    MusicPackage("fillets-ng-data", "GPL-2", "puzzle game score, Ogg Vorbis", music="usr/share/games/fillets-ng/music"),
    MusicPackage("fretsonfire-songs-muldjord", "CC BY-SA 3.0", "metal songs and guitar stems", label="fretsonfire"),
    MusicPackage("fretsonfire-songs-sectoid", "MIT (Carlos Viola Iborra)", "metal songs and guitar stems", label="fretsonfire"),
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


def _audio_of(package: MusicPackage, tree: Path, label: Path) -> int:
    """Copy the package's audio files into ``label``; Ogg files inside pk3 (zip) archives too."""
    root = tree / package.music if package.music else tree
    audio = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and p.suffix.lower() in AUDIO_SUFFIXES)
    for path in audio:  # flattened: the stem's folder names the song where files share a name
        name = path.name if sum(a.name == path.name for a in audio) == 1 else f"{path.parent.name}-{path.name}"
        shutil.copy2(path, label / name)
    count = len(audio)
    for archive in sorted(root.rglob("*.pk3")):
        with zipfile.ZipFile(archive) as pk3:
            for member in pk3.namelist():
                if Path(member).suffix.lower() in AUDIO_SUFFIXES:
                    (label / Path(member).name).write_bytes(pk3.read(member))
                    count += 1
    return count


def build_corpus(cache: Path = DEFAULT_CACHE, packages: tuple[MusicPackage, ...] = PACKAGES) -> Path:
    """``<cache>/corpus/<label>/<file>`` for every audio file of the packages, with
    ``<cache>/LICENSES/<package>.copyright`` and ``<cache>/corpus.json`` (packages, licences,
    files per package). Built once: a corpus whose stamp lists the same packages is reused."""
    corpus = cache / "corpus"
    stamp = cache / STAMP
    wanted = [p.name for p in packages]
    if stamp.exists() and json.loads(stamp.read_text()).get("packages") == wanted and corpus.is_dir():
        return corpus
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="corpus-", dir=cache))
    files: dict[str, int] = {}
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        for package in packages:
            tree = _fetch(package, Path(scratch))
            label = staging / package.folder
            label.mkdir(parents=True, exist_ok=True)
            files[package.name] = _audio_of(package, tree, label)
            (cache / "LICENSES").mkdir(exist_ok=True)
            shutil.copy2(tree / "usr" / "share" / "doc" / package.name / "copyright", cache / "LICENSES" / f"{package.name}.copyright")
    if corpus.exists():
        shutil.rmtree(corpus)
    staging.rename(corpus)
    (cache / "LICENSES" / "README.md").write_text(
        "# Licences of the real-music corpus\n\n" + "".join(f"- {p.name}: {p.licence} ({p.what}); the package's "
                                                           f"copyright file is {p.name}.copyright\n" for p in packages))
    stamp.write_text(json.dumps({"packages": wanted, "files": files,
                                 "licences": {p.name: p.licence for p in packages}}, indent=1))
    return corpus


if __name__ == "__main__":  # pragma: no cover
    print(build_corpus(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CACHE))
