"""The report stage: the experiment spec's ``report:`` section as the report's settings."""

from __future__ import annotations

from raysweep.config import ReportSpec


def report_settings(spec: ReportSpec):
    """:class:`raysweep.report.ReportSettings` with the values of ``spec``.

    A comparison declared for one protocol is tested in that protocol's family only; one without
    a protocol in every family holding both conditions; one with ``protocol_1`` and
    ``protocol_2`` across those two families (``family_by`` is then ``[protocol]``).
    """
    from raysweep.report import Comparison, ReportSettings

    return ReportSettings(
        metrics=spec.metrics,
        comparisons=tuple(Comparison(c.model_1, c.model_2, c.alternative, family=c.protocol,
                                     family_1=c.protocol_1, family_2=c.protocol_2)
                          for c in spec.comparisons),
        family_by=spec.family_by,
        correction=spec.correction,
        alpha=spec.alpha,
        tests=spec.tests,
        primary_test=spec.primary_test,
        bootstrap_resamples=spec.bootstrap_resamples,
        bootstrap_seed=spec.bootstrap_seed,
        power=spec.power,
    )
