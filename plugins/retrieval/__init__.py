"""Embeddings out of a trained model (`mmcore embed`) and nearest-neighbour search over them with
FAISS (`mmcore search`).

``embedding`` computes per-modality, fused and head-space vectors (``embed(model, samples)``) and
reads/writes them (``.npy`` + sidecar, ``.npz``, Parquet); ``index`` builds and queries FAISS
indexes; ``commands`` adds the two sub-commands through the ``mmcore_add_commands`` hook.
FAISS and pyarrow are imported only when an index or a Parquet file is built or read.
"""
