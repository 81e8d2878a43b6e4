"""Typed, frozen, validated specs: the single source of every default (docs/design.md principle 4).

A spec file is YAML (read with ``yaml.safe_load``) describing an :class:`ExperimentSpec`: named
datasets, a ``pretrain`` stage, an ``evaluate`` stage, optional ``search`` and ``report``
sections. Every default below is the paper's (docs/protocol.md) unless marked otherwise.

Validation is strict: an unknown key, a wrong type or an out-of-range value raises
:class:`~raysweep.errors.SpecError` with one line naming the file and the key path, and for an
unknown key the closest valid key::

    spec.yaml: pretrain.base.lamda_offdiag: unknown key (did you mean 'lambda_offdiag'?)

The same checks run when specs are built in Python (``__post_init__``), so a notebook user gets
the same errors. A spec file is checked whole: :func:`spec_from_data` reports every problem it
finds at once (:class:`~raysweep.errors.SpecProblems`, one line each), not only the first.

Numbers: PyYAML reads ``1e-3`` (no dot) as a string; float fields therefore also accept numeric
strings, and simple fractions such as ``1/8192`` (the paper's lambda).

Package layout: :mod:`~raysweep.config.validation` (the generic engine),
:mod:`~raysweep.config.specs` (the spec classes) and :mod:`~raysweep.config.loading` (files,
grids, YAML). Everything is re-exported here, so ``from raysweep.config import X`` is the import
to use.
"""

from raysweep.config.loading import (
    Axes,
    dump_spec,
    expand_comparisons,
    expand_product,
    experiment_from_dict,
    experiment_problems,
    load_spec,
    merge_run,
    non_default_fields,
    parse_yaml,
    spec_from_data,
)
from raysweep.config.specs import (
    AUGMENTATION_PIPELINES,
    DEFAULT_REPORT_METRICS,
    IMBALANCE_REPORT_METRICS,
    IN_DISTRIBUTION,
    MAX_FIRST_SEED,
    MAX_IMAGE_SIZE,
    MAX_SEEDS,
    MIN_IMAGE_SIZE,
    NOT_SEARCHABLE,
    PRETRAIN_PREFIX,
    SEARCHABLE,
    TWO_VIEW_PIPELINES,
    Comparison,
    Correction,
    DatasetSpec,
    DownstreamOptimizer,
    DownstreamSchedule,
    EncoderCondition,
    EncoderName,
    EncoderSpec,
    EvaluateStage,
    EvaluationSpec,
    ExperimentSpec,
    ExternalTestSet,
    LogisticSelection,
    LogisticSpec,
    MlflowTracking,
    PairwiseTestName,
    PretrainSpec,
    ProtocolName,
    ReportSpec,
    RepresentationSpec,
    ResourcesSpec,
    SearchEvaluation,
    SearchParam,
    SearchSpec,
    SourceKind,
    SourceSpec,
    TensorboardTracking,
    TrackingSpec,
    Trainable,
    WandbTracking,
    pretrain_reference,
)
from raysweep.config.validation import (
    Check,
    FrozenMapping,
    Spec,
    SpecT,
    _between,
    _type_name,
    from_dict,
    join_key_path,
    spec_field,
    to_dict,
)

__all__ = [
    "AUGMENTATION_PIPELINES",
    "Axes",
    "Check",
    "Comparison",
    "Correction",
    "DEFAULT_REPORT_METRICS",
    "DatasetSpec",
    "DownstreamOptimizer",
    "DownstreamSchedule",
    "EncoderCondition",
    "EncoderName",
    "EncoderSpec",
    "EvaluateStage",
    "EvaluationSpec",
    "ExperimentSpec",
    "ExternalTestSet",
    "FrozenMapping",
    "IMBALANCE_REPORT_METRICS",
    "IN_DISTRIBUTION",
    "LogisticSelection",
    "LogisticSpec",
    "MAX_FIRST_SEED",
    "MAX_IMAGE_SIZE",
    "MAX_SEEDS",
    "MIN_IMAGE_SIZE",
    "MlflowTracking",
    "NOT_SEARCHABLE",
    "PRETRAIN_PREFIX",
    "PairwiseTestName",
    "PretrainSpec",
    "ProtocolName",
    "ReportSpec",
    "RepresentationSpec",
    "ResourcesSpec",
    "SEARCHABLE",
    "SearchEvaluation",
    "SearchParam",
    "SearchSpec",
    "SourceKind",
    "SourceSpec",
    "Spec",
    "SpecT",
    "TWO_VIEW_PIPELINES",
    "TensorboardTracking",
    "TrackingSpec",
    "Trainable",
    "WandbTracking",
    "_between",
    "_type_name",
    "dump_spec",
    "expand_comparisons",
    "expand_product",
    "experiment_from_dict",
    "experiment_problems",
    "from_dict",
    "join_key_path",
    "load_spec",
    "merge_run",
    "non_default_fields",
    "parse_yaml",
    "pretrain_reference",
    "spec_field",
    "spec_from_data",
    "to_dict",
]
