"""The evaluation protocol (docs/protocol.md "Fine-tuning"): fine-tuning and linear probes of an
encoder over many seeds, with fastai's LR finder and 1cycle, TTA, and per-run metrics rows.

- :func:`finetune`: one seed, whole encoder trained after a head-only epoch.
- :func:`probe`: many seeds, encoder frozen; K seeds share one encoder pass (batched) by default.
- :func:`logistic_probe`: many seeds, standardised frozen features + an L2 logistic regression
  (SSL papers' linear evaluation), features computed once.
- :func:`representation_analysis`: kNN accuracy, linear separability, silhouette and 2-D
  embeddings of an encoder's features (once per encoder).
"""

from raysweep.evaluate.batched import BatchedLinear, probe_batched
from raysweep.evaluate.features import LabelledFeatures, labelled_features
from raysweep.evaluate.logistic import logistic_probe, logistic_rows
from raysweep.evaluate.metrics import classification_metrics
from raysweep.evaluate.probes import probe
from raysweep.evaluate.protocol import finetune, probe_single
from raysweep.evaluate.representation import representation_analysis
from raysweep.evaluate.streams import SeedStreams
from raysweep.evaluate.tta import tta_probabilities

__all__ = ["BatchedLinear", "LabelledFeatures", "SeedStreams", "classification_metrics",
           "finetune", "labelled_features", "logistic_probe",
           "logistic_rows", "probe", "probe_batched", "probe_single", "representation_analysis",
           "tta_probabilities"]
