"""Every error class of the package, one hierarchy under :class:`RerankersError`.

The CLI catches :class:`RerankersError` and prints one line, ``rerank: error: <message>``, with exit
status 2 instead of a traceback. Library code raises these wherever the cause is the user's input
(a file, a name, an argument, a config); programming errors stay ordinary exceptions. Each class
also derives from the builtin exception a caller would expect (``ValueError``, ``KeyError``,
``FileNotFoundError``), so ``except ValueError`` keeps working.

    RerankersError
      UsageError                    arguments that do not fit together
      UnwritableOutputError         an output path that cannot be written
      DataFormatError               a malformed input file (names the file and line)
      UnknownDatasetError           a dataset name that resolves to nothing
      DatasetLoadError              ir_datasets knows it but cannot provide it
      EmptyInputError               an empty query or document
      TemplateError                 a template that cannot work
      MissingDocumentsError         a run names documents the corpus lacks
      UnknownQueryError             a run names queries the topics lack
      UnknownMetricError            a metric name nobody knows
      EvaluationError               a run and qrels that cannot be evaluated together
      RetrievalError                BM25 retrieval that cannot run
      KernelBackendError            an unknown kernel backend, or one that cannot run the inputs
      ModelLoadingError             a model that cannot be built or loaded
        CheckpointNotFoundError     a name or path that is no checkpoint
          UnknownBackboneError      not a preset, a local folder nor a reachable hub id
        CheckpointPermissionError   a checkpoint file that exists but may not be read
        ModelConfigError            a bad or unsupported config
        CheckpointMismatchError     tensors that do not match the config
      TrainingError                 training that cannot start or go on
        TrainingConfigError         a bad training config (unknown key, bad value)
        TrainingDataError           training data that gives nothing to train on
        ResumeMismatchError         a resume folder of another run
        NonFiniteLossError          a NaN / infinite loss (names the step and batch)
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence


class RerankersError(Exception):
    """An error the user can fix (bad input file, unknown dataset or metric, bad argument)."""


class _PlainKeyError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UsageError(RerankersError, ValueError):
    """Arguments that do not fit together (or a value out of range)."""


class UnwritableOutputError(RerankersError, OSError):
    """An output file or folder that cannot be written (names the path as given, and why)."""


# ---- data -------------------------------------------------------------------------------------
class DataFormatError(RerankersError, ValueError):
    """A malformed input file: the message names the file and the 1-based line number.

    Attributes:
        path: the file (str).
        line: 1-based line number, or None where the problem concerns the whole file.
        reason: the problem, without the location.
    """

    def __init__(self, path: str | os.PathLike, line: int | None, reason: str):
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


class UnknownDatasetError(RerankersError, _PlainKeyError):
    """A dataset name that is neither a known short name, an ir_datasets id, nor an existing file."""


class DatasetLoadError(RerankersError):
    """ir_datasets knows the dataset but could not provide it (e.g. not downloaded, offline)."""


class EmptyInputError(RerankersError, ValueError):
    """A query or document is empty (or only whitespace); names the pair's index or id."""


class TemplateError(RerankersError, ValueError):
    """A template that cannot work: unknown name, lengths that leave no room, a tokenizer without
    the special tokens it needs, queries and documents that do not pair up."""


class MissingDocumentsError(RerankersError, _PlainKeyError):
    """A run names documents that the corpus / candidates do not hold."""


class UnknownQueryError(RerankersError, _PlainKeyError):
    """A run names queries that the topics do not hold."""


# ---- evaluation and retrieval -----------------------------------------------------------------
class UnknownMetricError(RerankersError, ValueError):
    """A metric name that neither our aliases nor ranx know."""


class EvaluationError(RerankersError, ValueError):
    """A run and qrels that cannot be evaluated together (e.g. no query in common)."""


class RetrievalError(RerankersError):
    """First-stage retrieval that cannot run (empty corpus, missing backend, bad parameters)."""


# ---- kernels and models -----------------------------------------------------------------------
class KernelBackendError(RerankersError, ValueError):
    """An unknown backend name, or a backend that cannot run these inputs."""


class ModelLoadingError(RerankersError):
    """Base class: a model could not be built or loaded (the CLI prints it as one line)."""


class CheckpointNotFoundError(ModelLoadingError, FileNotFoundError):
    """A name or path does not resolve to a checkpoint (not a local directory, not reachable/cached)."""


class UnknownBackboneError(CheckpointNotFoundError, ValueError):
    """A backbone name that is neither a preset, a local folder nor a reachable hub id."""


class CheckpointPermissionError(ModelLoadingError, PermissionError):
    """A checkpoint file (weights, config, tokenizer) that exists but this user may not read: the
    message names the file; never reported as missing."""


class ModelConfigError(ModelLoadingError, ValueError):
    """A config file is unreadable, of an unknown format, or describes an unsupported model."""


def _preview(keys: Sequence[str], limit: int) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


class CheckpointMismatchError(ModelLoadingError):
    """The checkpoint's tensors do not match the model built from its config.

    Attributes:
        missing:    keys the model needs that the checkpoint lacks
        unexpected: keys in the checkpoint the model does not have
        mismatched: (key, checkpoint shape, model shape) for keys present in both with other shapes
        source:     the checkpoint (path or name) the tensors came from
    """

    def __init__(self, missing: Iterable[str] = (), unexpected: Iterable[str] = (),
                 mismatched: Iterable[tuple[str, tuple, tuple]] = (), source: str | None = None,
                 limit: int = 10):
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = sorted(mismatched)
        self.source = source
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing key(s): {_preview(self.missing, limit)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected key(s): {_preview(self.unexpected, limit)}")
        if self.mismatched:
            shapes = [f"{k} (checkpoint {tuple(a)} vs model {tuple(b)})" for k, a, b in self.mismatched]
            parts.append(f"{len(shapes)} key(s) with a wrong shape: {_preview(shapes, limit)}")
        where = f" in {source}" if source else ""
        super().__init__(f"checkpoint{where} does not match its config: " + "; ".join(parts))


# ---- training ---------------------------------------------------------------------------------
class TrainingError(RerankersError):
    """Training that cannot start or go on."""


class TrainingConfigError(TrainingError, ValueError):
    """A training config or flag that is wrong: an unknown key, a value out of range (names it)."""


class TrainingDataError(TrainingError, ValueError):
    """Training data that leaves nothing to train on (no positive, too few candidates for a group)."""


class ResumeMismatchError(TrainingError):
    """``--resume`` of a folder whose run used another backbone or other settings."""


class NonFiniteLossError(TrainingError, FloatingPointError):
    """A NaN or infinite loss: the message names the step and the batch; the last checkpoint is intact."""


def one_line(error: BaseException | str, limit: int | None = 300) -> str:
    """A message (or another library's exception, as ``Type: message``) on one line: its lines joined by
    spaces, cut to ``limit`` characters (None: never). transformers, huggingface_hub and ir_datasets raise
    messages of several lines; every error the user sees is one line."""
    if isinstance(error, BaseException):
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    else:
        text = str(error)
    text = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return text if limit is None or len(text) <= limit else text[: limit - 3].rstrip() + "..."


def install_hint(extra: str) -> str:
    """How to install an optional extra of this project (PyPI's package named 'rerankers' is another one)."""
    return f"pip install -e '.[{extra}]' in the rerankers project folder"
