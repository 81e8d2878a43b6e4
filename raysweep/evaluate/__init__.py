"""The evaluation protocol (docs/protocol.md "Fine-tuning"): fine-tuning and linear probes of an
encoder over many seeds, with fastai's LR finder and 1cycle, TTA, and per-run metrics rows.

- :func:`finetune`: one seed, whole encoder trained after a head-only epoch.
- :func:`probe`: many seeds, encoder frozen; K seeds share one encoder pass (batched) by default.
- :func:`evaluate_condition`: every protocol x seed of one encoder (used by the sweep).
"""

from raysweep.evaluate.batched import BatchedLinear, probe_batched
from raysweep.evaluate.conditions import evaluate_condition, probe
from raysweep.evaluate.metrics import classification_metrics
from raysweep.evaluate.protocol import finetune, probe_single
from raysweep.evaluate.streams import SeedStreams
from raysweep.evaluate.tta import tta_probabilities

__all__ = ["BatchedLinear", "SeedStreams", "classification_metrics", "evaluate_condition",
           "finetune", "probe", "probe_batched", "probe_single", "tta_probabilities"]
