"""Planning an experiment before anything runs: the trials and their identities, what they need
and what the cluster offers, and every check that can refuse a spec up front.

- :mod:`.trials`: the evaluate stage's trials, pre-training waves and the printed plan;
- :mod:`.identity`, :mod:`.run_identity`: row ids and pre-training run hashes (what a result
  depends on, so that a rerun finds it);
- :mod:`.resources`, :mod:`.gpu_memory`, :mod:`.searches`: the cluster (and its autoscaler),
  measured GPU shares, a search's resources and concurrency;
- :mod:`.budgets`: label budgets; :mod:`.estimate`: ``--dry-run`` time estimates;
- :mod:`.preflight`, :mod:`.leakage`: data, weights, storage and test-overlap checks.
"""
