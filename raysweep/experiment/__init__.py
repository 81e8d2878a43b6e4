"""The orchestrator: :mod:`.runner` runs a spec's stages (``raysweep run``, ``raysweep
search``) under the experiment's lock; :mod:`.status` reads an experiment directory back
(``raysweep status``); :mod:`.interrupt` says what Ctrl-C kept; :mod:`.demo` is ``raysweep
demo``.
"""
