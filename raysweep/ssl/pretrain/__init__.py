"""Pre-training and further pre-training of an encoder on Ray Train (DDP).

* :func:`run_pretrain` (:mod:`.driver`): one ``TorchTrainer`` per run, idempotent by a content
  hash of the spec; returns :class:`PretrainResult` (``encoder.pt``, ``metrics.jsonl``,
  ``meta.json``, the run directory).
* :func:`pretrain_worker` (:mod:`.loop`): one worker's plain-PyTorch loop (every method of
  :mod:`raysweep.ssl.methods`; the frozen-encoder epoch; SSL / SSL_p; 1cycle; LR finder;
  checkpoints).
"""

from raysweep.runtime.pretrain_driver import PretrainResult, run_pretrain
from raysweep.ssl.pretrain.hooks import LocalHooks, RayTrainHooks, WorkerHooks
from raysweep.ssl.pretrain.loop import PretrainNet, TrainingData, pretrain_worker
from raysweep.store.run_dirs import is_finished, result_hash, run_directory

__all__ = [
    "LocalHooks",
    "PretrainNet",
    "PretrainResult",
    "RayTrainHooks",
    "TrainingData",
    "WorkerHooks",
    "is_finished",
    "pretrain_worker",
    "result_hash",
    "run_directory",
    "run_pretrain",
]
