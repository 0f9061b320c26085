"""Training of cross-encoders on packed groups: data sources, sampler, losses, the loop, checkpoints.

    resolve_training_config   settings from a YAML config, flags, or a run to resume
    plan_training             check paths and describe the run (``--dry-run``)
    run_training              train; returns a TrainResult
    TrainConfig               every setting (``rerankers.train.config``)
"""
__all__ = ["TrainConfig", "plan_training", "resolve_training_config", "run_training"]


def __getattr__(name: str):
    if name in ("plan_training", "resolve_training_config", "run_training"):
        from rerankers.train import run
        return getattr(run, name)
    if name == "TrainConfig":
        from rerankers.train.config import TrainConfig
        return TrainConfig
    raise AttributeError(f"module 'rerankers.train' has no attribute {name!r}")
