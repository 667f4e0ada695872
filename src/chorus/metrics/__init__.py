"""Metrics, one layer below training and evaluation (both use them): classification and
multi-label scores with bootstrap intervals (``classification``), and retrieval by distance
(``retrieval``: MAP@k, Hamming and cosine distance, random-code baselines). Pure NumPy/scikit-learn."""
