"""A search's space in Optuna's terms, and what one trial's sampled values do to the base run.

Searched keys are dotted paths: ``pretrain.<field>`` (into the search's base
:class:`~raysweep.config.PretrainSpec`, nested fields too: ``pretrain.data.image_size``) and
``evaluate.<setting>`` (into its :class:`~raysweep.config.EvaluationSpec`). The *default*
configuration is the base run and settings as written, with nothing sampled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from raysweep.config import EvaluationSpec, PretrainSpec, SearchParam, SearchSpec, to_dict

__all__ = ["PROXY_DEFAULT_EVERY", "default_values", "distributions", "grouped", "proxy_metric",
           "trial_run", "trial_settings"]

#: Under ASHA every epoch carries the proxy unless the base run asks for it less often.
PROXY_DEFAULT_EVERY = 1


def distributions(space: Mapping[str, SearchParam]) -> dict[str, Any]:
    """``{key: optuna distribution}``: uniform and loguniform -> ``FloatDistribution`` (log for
    loguniform), int -> ``IntDistribution`` (both bounds included), choice ->
    ``CategoricalDistribution``."""

    converted: dict[str, Any] = {}
    for key, param in space.items():
        if param.type == "choice":
            converted[key] = CategoricalDistribution(list(param.choices or ()))
        elif param.type == "int":
            converted[key] = IntDistribution(int(param.low), int(param.high))  # type: ignore[arg-type]
        else:
            converted[key] = FloatDistribution(float(param.low), float(param.high),  # type: ignore[arg-type]
                                               log=param.type == "loguniform")
    return converted


def _part(params: Mapping[str, Any], stage: str) -> dict[str, Any]:
    prefix = f"{stage}."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def grouped(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"pretrain.alpha": a, "evaluate.lr_max": b}`` -> ``{"pretrain": {"alpha": a},
    "evaluate": {"lr_max": b}}`` (empty groups left out): the layout of ``best.yaml``."""
    groups = {stage: _part(params, stage) for stage in ("pretrain", "evaluate")}
    return {stage: values for stage, values in groups.items() if values}


def proxy_metric(search: SearchSpec) -> str | None:
    """The per-epoch metric ASHA stops on (``proxy_knn_acc`` / ``proxy_linear_acc``), or None
    without a scheduler."""
    return f"proxy_{search.pretrain.proxy}_acc" if search.scheduler == "asha" else None


def trial_run(search: SearchSpec, params: Mapping[str, Any]) -> PretrainSpec:
    """The base pre-training run with a trial's ``pretrain.*`` values applied.

    Under ASHA the run reports the downstream proxy (every epoch unless the base asks for
    ``proxy_every``), on the base's ``proxy_data`` or else the search's evaluation data, whose
    validation split scores the trial in the end. The proxy settings are not part of the run's
    content hash (they only observe), so they never cause a retraining.
    """
    changes = _part(params, "pretrain")
    if search.scheduler == "asha":
        changes.setdefault("proxy_every", search.pretrain.proxy_every or PROXY_DEFAULT_EVERY)
        if search.pretrain.proxy_data is None:
            changes["proxy_data"] = search.evaluate.data
    return search.pretrain.replace(**changes) if changes else search.pretrain


def trial_settings(search: SearchSpec, params: Mapping[str, Any]) -> EvaluationSpec:
    """The search's probe settings with a trial's ``evaluate.*`` values applied."""
    changes = _part(params, "evaluate")
    return search.evaluate.settings.replace(**changes) if changes else search.evaluate.settings


def default_values(search: SearchSpec) -> dict[str, Any]:
    """The base's value of every searched key (None where the base leaves it to a finder,
    e.g. ``lr_max: null``)."""

    sources = {"pretrain": to_dict(search.pretrain), "evaluate": to_dict(search.evaluate.settings)}
    values: dict[str, Any] = {}
    for key in search.space:
        stage, _, path = key.partition(".")
        value: Any = sources[stage]
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        values[key] = value
    return values
