"""PyTorch modules. Each model records the feature-config hash it was trained on."""

from chorus.models.cnn import SegmentClassifier, StyleCNN

__all__ = ["SegmentClassifier", "StyleCNN"]
