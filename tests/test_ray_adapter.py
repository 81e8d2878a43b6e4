"""raysweep.ray_adapter: what it relies on in the installed Ray is still there and still means
the same (a failure here is the first sign that a Ray upgrade needs the adapter changed)."""

from __future__ import annotations

import importlib
import inspect
import logging

import pytest
import ray

from raysweep import ray_adapter
from raysweep.plan.resources import view_from_cluster_config


def test_the_gcs_state_accessor_exists_and_takes_no_argument():
    state = importlib.import_module(ray_adapter.STATE_MODULE).state
    assert callable(state.get_cluster_config)
    assert not [p for p in inspect.signature(state.get_cluster_config).parameters.values()
                if p.default is inspect.Parameter.empty]


def test_without_ray_there_is_no_cluster_config(monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    assert ray_adapter.gcs_cluster_config() is None


@pytest.mark.ray
def test_a_local_cluster_publishes_no_node_group(ray_session):
    """The shared local instance has no autoscaler: no config, or one without node groups,
    which the planner reads as "no autoscaler" (the shape it reads is the protobuf's)."""
    config = ray_adapter.gcs_cluster_config()
    assert config is None or hasattr(config, "node_group_configs")
    assert view_from_cluster_config(config) is None


def test_the_train_report_logger_is_named_after_its_module_file():
    """Ray Train's context module logs through ``logging.getLogger(__file__)``: its logger of
    that name exists once the module is imported, and the report call logs through it."""
    name = ray_adapter.train_report_logger_name()
    assert name is not None and name.endswith("context.py")
    module = importlib.import_module(ray_adapter.TRAIN_REPORT_CONTEXT_MODULE)
    assert name in logging.root.manager.loggerDict
    assert "getLogger(__file__)" in inspect.getsource(module)
    assert "Reporting training result" in inspect.getsource(module)
