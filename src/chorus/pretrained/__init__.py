"""Models that have heard real music: musicnn's trained taggers in PyTorch (``musicnn``), read from
the pinned wheel's TensorFlow checkpoints without TensorFlow (``tf_checkpoint``, ``weights``), fed
by a configuration of chorus's own features stage (``frontend``) and wrapped as chorus networks
(``tagger``)."""
