"""Run musicnn's original TensorFlow graphs on a few real clips and write a fixture for the port's test.

Runs in its own environment (see ``make musicnn-reference``): tensorflow-cpu, tf-keras, librosa and
the musicnn wheel installed with ``--no-deps``; ``TF_USE_LEGACY_KERAS=1``. The input is musicnn's
front end computed in float32 (the original casts the mel power to float16, which overflows to
inf on loud music), so the reference graph and the PyTorch port see the same patches.

Usage: python reference.py OUT.npz CLIP [CLIP ...]
"""

import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from musicnn import configuration as config  # noqa: E402
from musicnn import models  # noqa: E402

tf.compat.v1.disable_eager_execution()
MODELS = ("MTT_musicnn", "MSD_musicnn", "MTT_vgg", "MSD_vgg")
N_FRAMES = 187
CLIP_SECONDS = 6.5  # two whole patches per clip
LICENCES = {"fretsonfire-songs-muldjord": "fretsonfire-songs-muldjord, CC BY-SA 3.0 (Muldjord)",
            "drascula-music": "drascula-music, Drascula licence (BSD-like, DFSG-free)"}


def patches(audio):
    mel = librosa.feature.melspectrogram(y=audio, sr=config.SR, hop_length=config.FFT_HOP, n_fft=config.FFT_SIZE,
                                         n_mels=config.N_MELS).T.astype(np.float32)
    logmel = np.log10(np.float32(10000) * mel + np.float32(1))
    count = logmel.shape[0] // N_FRAMES
    return np.stack([logmel[i * N_FRAMES:(i + 1) * N_FRAMES] for i in range(count)])


def run(model, batch):
    tf.compat.v1.reset_default_graph()
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, N_FRAMES, config.N_MELS])
        training = tf.compat.v1.placeholder(tf.bool)
        outputs = models.define_model(x, training, model, 50)
    if "vgg" in model:  # its penultimate layer is the flattened last pooling
        wanted = {"taggram": tf.nn.sigmoid(outputs[0]), "penultimate": tf.compat.v1.layers.flatten(outputs[5])}
    else:
        wanted = {"taggram": tf.nn.sigmoid(outputs[0]), "penultimate": outputs[8], "max_pool": outputs[7],
                  "mean_pool": outputs[6]}
    with tf.compat.v1.Session() as session:
        tf.compat.v1.train.Saver().restore(session, os.path.join(os.path.dirname(models.__file__), model) + "/")
        return dict(zip(wanted, session.run(list(wanted.values()), feed_dict={x: batch, training: False}), strict=True))


def main(out, clips):
    audio = np.stack([librosa.load(c, sr=config.SR, offset=30.0, duration=CLIP_SECONDS)[0] for c in clips])
    batch = np.concatenate([patches(a) for a in audio])
    fixture = {"audio": audio.astype(np.float32), "patches": batch}
    for model in MODELS:
        fixture.update({f"{model}/{name}": value for name, value in run(model, batch).items()})
    fixture["provenance"] = np.array(json.dumps({
        "clips": [os.path.basename(c) for c in clips], "offset_s": 30.0, "seconds": CLIP_SECONDS,
        "tensorflow": tf.__version__, "librosa": librosa.__version__, "musicnn": "0.1.0",
        "licences": {os.path.basename(c): LICENCES.get(os.path.basename(os.path.dirname(c)), "see its package") for c in clips},
        "made_by": "make musicnn-reference (infra/musicnn/reference.py)"}))
    np.savez_compressed(out, **fixture)
    print(out, {k: v.shape for k, v in fixture.items()})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
