"""PyTorch networks and the scorers that are registered (networks and scikit-learn pipelines
under one contract)."""

from chorus.models.nets import (
           CRNN,
           CRNNH,
           PaperCNN,
           PretextCNN,
           ShortChunkCNN,
           TransferCNN,
)
from chorus.models.scorer import Contract, Scorer, SklearnScorer, TorchScorer

__all__ = ["CRNN", "CRNNH", "Contract", "PaperCNN", "PretextCNN", "Scorer", "ShortChunkCNN", "SklearnScorer", "TorchScorer",
           "TransferCNN"]
