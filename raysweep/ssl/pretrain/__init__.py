"""The worker side of pre-training and further pre-training of an encoder on Ray Train (DDP).

* :func:`pretrain_worker` (:mod:`.loop`): one worker's plain-PyTorch loop (every method of
  :mod:`raysweep.ssl.methods`; the frozen-encoder epoch; SSL / SSL_p; 1cycle; LR finder;
  checkpoints), reporting through :class:`WorkerHooks` (:mod:`.hooks`: Ray Train's, or local
  ones for a run without Ray).

The driver that starts one ``TorchTrainer`` per run is :mod:`raysweep.runtime.pretrain_driver`;
where a run lives and what its identity covers, :mod:`raysweep.plan.run_identity` and
:mod:`raysweep.store.run_dirs`.
"""

from raysweep.ssl.pretrain.hooks import LocalHooks, RayTrainHooks, WorkerHooks
from raysweep.ssl.pretrain.loop import PretrainNet, TrainingData, pretrain_worker

__all__ = [
    "LocalHooks",
    "PretrainNet",
    "RayTrainHooks",
    "TrainingData",
    "WorkerHooks",
    "pretrain_worker",
]
