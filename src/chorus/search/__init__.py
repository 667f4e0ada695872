"""Similar-song search (docs/method.md, "Evaluation and promotion"): per-track semantic vectors (cosine) and binary hash
codes (Hamming) of a registered model version, in faiss indexes, queried by track id or audio."""

from chorus.search.codes import hamming_scan, pack_codes, unpack_codes
from chorus.search.index import SearchIndex, build_hash_index, build_vector_index

__all__ = ["SearchIndex", "build_hash_index", "build_vector_index", "hamming_scan", "pack_codes", "unpack_codes"]
