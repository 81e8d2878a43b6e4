"""The stages of an experiment, in the order :mod:`raysweep.experiment.runner` runs them:
:mod:`.pretrain` (Ray Train runs, wave by wave), :mod:`.evaluate` (the Tune grid of
fine-tunes, probes and logistic rows), :mod:`.representation` (representation analyses) and
:mod:`.report` (``report.html``). The search stage is :mod:`raysweep.search.stage`.
"""
