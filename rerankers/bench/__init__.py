"""``rerank bench``: what a reranker costs to train and to run, beside the systems a user would pick instead.

Modes (one module each, read bottom-up): :mod:`~rerankers.bench.train` (the full training step:
forward, loss, backward, clipping, fused AdamW, on packed / padded / one-at-a-time batches),
:mod:`~rerankers.bench.infer` (reranking a run's top-k), :mod:`~rerankers.bench.scaling` (step time and
memory against sequence length) and :mod:`~rerankers.bench.profile` (where a training step's time goes,
by operator class). The anchors (:mod:`~rerankers.bench.anchors`: mamba-ssm's CUDA Mamba and
transformers' BERT with SDPA on padded batches, sentence-transformers' ``CrossEncoder.predict``) are
rows of the same tables, measured in the same run, each checked against our model with the same
weights before anything is timed.

Methodology (:mod:`~rerankers.bench.timing`): warm-up calls dropped, then the timed calls back to back
with no synchronisation between them (as a training run), each timed on the GPU's clock; a row's time is
their mean (``RERANKERS_TIMING=synced``: a synchronisation around every call and the median, llm.c's
way), peak memory per row. Every output (JSON,
Markdown, PNG; :mod:`~rerankers.bench.report`) names the card, the software versions and the command.
"""
