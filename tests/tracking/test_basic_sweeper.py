"""The default sweeper (`tfrexp -m`) with Hydra's own config loader, launcher and job runner, in this process:
with the basic launcher each job's config is composed once; a bad override still stops a sweep before any job."""

from __future__ import annotations

import copy
import logging

import pytest
from hydra._internal.callbacks import Callbacks
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.core.plugins import Plugins
from hydra.errors import ConfigCompositionException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext

from tfrexp import run_context
from tfrexp.config import CONF_DIR

JOBS = [["trainer.seed=1"], ["trainer.seed=2"], ["trainer.seed=3"]]


@pytest.fixture(autouse=True)
def root_logging_restored():
    """Hydra's job runner points the root logger at this test's captured stdout and its job's log file."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def counted_loader(monkeypatch):
    """Hydra's config loader for conf/, and the overrides of every config it composes."""
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(CONF_DIR))
    composed: list[list[str]] = []
    load = loader.load_configuration

    def counted(*args, **kwargs):
        composed.append(kwargs["overrides"])
        return load(*args, **kwargs)

    monkeypatch.setattr(loader, "load_configuration", counted)
    return loader, composed


def _sweeper(loader, tmp_path, task, *overrides: str) -> Sweeper:
    """The sweeper `tfrexp -m` gets, built as Hydra builds it."""
    master = run_context.compose(f"paths.output_dir={tmp_path}", f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides,
                                 return_hydra_config=True)
    sweeper = Plugins.instance().instantiate_sweeper(
        hydra_context=HydraContext(config_loader=loader, callbacks=Callbacks()), task_function=task, config=master)
    assert type(sweeper).__name__ == "TrackedBasicSweeper"
    return sweeper


def test_a_serial_sweep_composes_each_job_once(tmp_path, counted_loader):
    loader, composed = counted_loader
    seeds = []
    sweeper = _sweeper(loader, tmp_path, lambda job: seeds.append(job.trainer.seed))
    sweeper.validate_batch_is_legal(JOBS)  # what the sweeper does before launching a batch
    sweeper.launcher.launch(JOBS, initial_job_idx=0)
    assert seeds == [1, 2, 3]
    assert [overrides[-1] for overrides in composed] == ["trainer.seed=1", "trainer.seed=2", "trainer.seed=3"]
    assert sorted(path.name for path in (tmp_path / "sweep").iterdir()) == ["0", "1", "2"]
    assert sweeper.hydra_context.config_loader._kept == {}, "every kept config was taken"


def test_past_the_kept_configs_a_job_is_composed_again(tmp_path, counted_loader, monkeypatch):
    loader, composed = counted_loader
    seeds = []
    sweeper = _sweeper(loader, tmp_path, lambda job: seeds.append(job.trainer.seed))
    monkeypatch.setattr(type(sweeper.hydra_context.config_loader), "KEEP_AT_MOST", 2)
    sweeper.validate_batch_is_legal(JOBS)
    sweeper.launcher.launch(JOBS, initial_job_idx=0)
    assert seeds == [1, 2, 3]
    assert [overrides[-1] for overrides in composed] == ["trainer.seed=1", "trainer.seed=2", "trainer.seed=3",
                                                         "trainer.seed=3"]


def test_a_bad_override_of_a_later_job_stops_the_sweep_before_any_job(tmp_path, counted_loader):
    loader, _ = counted_loader
    seeds = []
    sweeper = _sweeper(loader, tmp_path, lambda job: seeds.append(job.trainer.seed))
    with pytest.raises(ConfigCompositionException, match="nope"):
        sweeper.validate_batch_is_legal([["trainer.seed=1"], ["model=nope"]])
    assert seeds == []


def test_a_launcher_in_other_processes_keeps_hydras_loader(tmp_path, counted_loader):
    loader, _ = counted_loader
    sweeper = _sweeper(loader, tmp_path, lambda job: None, "hydra/launcher=joblib")
    assert sweeper.hydra_context.config_loader is loader


def test_the_loader_that_keeps_configs_can_be_copied(tmp_path, counted_loader):
    loader, _ = counted_loader
    kept = _sweeper(loader, tmp_path, lambda job: None).hydra_context.config_loader
    assert copy.copy(kept).get_search_path() is loader.get_search_path()
