"""``raysweep demo``: the demo study and the demo search, read from the shipped specs
``search_spaces/demo.yaml`` and ``search_spaces/demo_search.yaml`` (what each holds and why: the
comments there).

``smoke=True`` keeps each one's shape and makes it short: the study with one epoch everywhere
(about a minute on 2 CPU cores), the search with 4 trials of 2 epochs and 2 probe seeds (the CI
test). ``storage`` replaces the spec's storage root.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from raysweep.config import ExperimentSpec, parse_yaml, spec_from_data

#: The demo study and the demo search: files of ``raysweep/search_spaces`` (the repository's
#: ``search_spaces/``, shipped in the package).
DEMO_STUDY = "demo.yaml"
DEMO_SEARCH = "demo_search.yaml"


def shipped_spec_text(name: str) -> str:
    """The text of the shipped spec ``search_spaces/<name>``."""
    return (resources.files("raysweep") / "search_spaces" / name).read_text(encoding="utf-8")


def _shipped_spec_data(name: str, storage: str | None) -> dict[str, Any]:
    data = parse_yaml(shipped_spec_text(name))
    if storage:
        data["storage"] = storage
    return data


def demo_spec_dict(*, smoke: bool = False, storage: str | None = None) -> dict[str, Any]:
    """The demo study as plain data: ``search_spaces/demo.yaml``, with ``smoke`` one
    pre-training and one fine-tuning epoch everywhere and a 10-iteration LR finder (name
    ``demo-smoke``)."""
    data = _shipped_spec_data(DEMO_STUDY, storage)
    if smoke:
        data["name"] = f"{data['name']}-smoke"
        for run in data["pretrain"]:
            run["epochs"] = 1
        data["evaluate"]["settings"].update(epochs=1, lr_finder_iters=10)
    return data


def demo_spec(*, smoke: bool = False, storage: str | None = None) -> ExperimentSpec:
    """The validated :func:`demo_spec_dict`."""
    return spec_from_data(demo_spec_dict(smoke=smoke, storage=storage),
                          source=f"search_spaces/{DEMO_STUDY}")


def demo_search_spec_dict(*, smoke: bool = False, storage: str | None = None) -> dict[str, Any]:
    """The demo search as plain data: ``search_spaces/demo_search.yaml``, with ``smoke`` 4
    trials of 2 pre-training epochs, each scored by 2 probe seeds of 10 epochs with a
    20-iteration LR finder (name ``demo-search-smoke``)."""
    data = _shipped_spec_data(DEMO_SEARCH, storage)
    if smoke:
        data["name"] = f"{data['name']}-smoke"
        [search] = data["search"]
        search["num_samples"] = 4
        search["pretrain"]["epochs"] = 2
        search["evaluate"]["seeds"] = 2
        search["evaluate"]["settings"].update(epochs=10, lr_finder_iters=20)
    return data


def demo_search_spec(*, smoke: bool = False, storage: str | None = None) -> ExperimentSpec:
    """The validated :func:`demo_search_spec_dict`."""
    return spec_from_data(demo_search_spec_dict(smoke=smoke, storage=storage),
                          source=f"search_spaces/{DEMO_SEARCH}")
