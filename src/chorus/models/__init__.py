"""PyTorch networks and the scorers that are registered (networks and scikit-learn pipelines
under one contract)."""

from chorus.models.nets import CRNN, CRNNH, PaperCNN, PretextCNN, ShortChunkCNN, TransferCNN
from chorus.models.scorer import Contract, SklearnScorer, TorchScorer

__all__ = ["CRNN", "CRNNH", "Contract", "PaperCNN", "PretextCNN", "ShortChunkCNN", "SklearnScorer", "TorchScorer",
           "TransferCNN"]
