"""The Optuna search over pre-training hyper-parameters (Barlow Twins lambda, sparsity alpha,
lr_max, augmentation strength), on Ray Tune with ASHA pruning and a resumable journal.

:mod:`.stage` is the entry (one study per ``search:`` entry); :mod:`.space`, :mod:`.searcher`,
:mod:`.pruning`, :mod:`.trial`, :mod:`.objective`, :mod:`.study`, :mod:`.journal` and
:mod:`.outputs` are its parts (docs/design.md "The stages").
"""
