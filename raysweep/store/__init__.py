"""The experiment directory: what a run leaves and how it is found again.

- :mod:`.results`: one JSON row per (condition, protocol, seed), content-addressed, and
  ``results.parquet`` built from them;
- :mod:`.run_dirs`: the files of a pre-training run directory (``encoder.pt``, ``meta.json``,
  ``metrics.jsonl``, Ray Train's checkpoints) and whether a run finished;
- :mod:`.searches`: where a search keeps its study, trials and outputs;
- :mod:`.lock`: one runner per experiment (heartbeat, stale-lock takeover).

What a row or run *is* (its identity) is planning: :mod:`raysweep.plan.identity` and
:mod:`raysweep.plan.run_identity`.
"""
