"""Config mistakes stop the run at start with one clear message naming the key and the value."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException

from helpers import compose_config, run_tfrexp
from tfrexp import config, run_context, sources
from tfrexp.config import Cache, Compression, Repeat
from tfrexp.errors import ConfigError


def test_default_config_composes_into_typed_settings(make_settings, data_dir):
    settings = make_settings()
    assert settings.dataset.name == "mnist"
    source = sources.build(settings.dataset)
    assert isinstance(source, sources.idx.Source)
    assert source.settings.dir == str(data_dir / "mnist")
    assert settings.pipeline.repeat is Repeat.per_epoch
    assert settings.pipeline.cache is Cache.auto
    assert settings.writer.compression is Compression.none
    assert settings.model["_target_"] == "tfrexp.models.convnets.build_cnn"
    assert settings.tracking.uri.startswith("sqlite:///") and settings.tracking.uri.endswith("/mlflow.db")


def test_no_data_dir_means_no_search_folder(tmp_path):
    cfg = compose_config(f"paths.output_dir={tmp_path}", "paths.data_dir=null")
    _, source = run_context.check(cfg)
    assert source.settings.dir is None


@pytest.mark.parametrize(
    ("override", "value"),
    [
        ("pipeline.batchsize=3", "batchsize"),  # unknown key
        ("pipeline.batch_size=abc", "'abc'"),  # wrong type
        ("pipeline.repeat=forever", "forever"),  # not a repeat strategy
        ("writer.compression=LZ4", "LZ4"),  # not a compression
    ],
)
def test_compose_time_errors_name_the_key_and_value(override, value):
    with pytest.raises(ConfigCompositionException) as raised:
        compose_config(override)
    text = f"{raised.value} {raised.value.__cause__}"
    assert f"full_key: {override.split('=')[0]}" in text and value in text


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pipeline.batch_size=0", "pipeline.batch_size=0"),
        ("pipeline.shuffle_buffer=-1", "pipeline.shuffle_buffer=-1"),
        ("pipeline.parallelism=fast", "pipeline.parallelism='fast'"),
        ("trainer.epochs=0", "trainer.epochs=0"),
        ("trainer.schedule=linear", "trainer.schedule='linear'"),
        ("writer.shard_size_mb=-2", "writer.shard_size_mb=-2"),
        ("dataset.validation_fraction=1.5", "dataset.validation_fraction=1.5"),
        ("dataset.max_examples_per_split=0", "dataset.max_examples_per_split=0"),
        ("dataset.name=../escape", "dataset.name='../escape'"),
        ("dataset.source.kind=zip", "dataset.source.kind='zip'"),
        ("+dataset.source.colour=red", "dataset.source.colour"),
        ("+pipeline.batchsize=3", "pipeline.batchsize: unknown key"),
        ("+trainer.sched=cosine", "trainer.sched: unknown key"),
        ("paths.data_dir=/does/not/exist", "paths.data_dir='/does/not/exist'"),
        ("dataset=catdog", "dataset.source.path="),  # the test data folder holds no catdog/
        ("dataset=image_folder", "dataset.source.path"),  # ??? : a path must be given
        ("writer.jpeg_quality=0", "writer.jpeg_quality=0"),
        ("writer.num_workers=0", "writer.num_workers=0"),
    ],
)
def test_invalid_values_raise_config_error_naming_key_and_value(make_settings, override, message):
    with pytest.raises(ConfigError) as raised:
        sources.build(make_settings(override).dataset)
    assert message in str(raised.value)


def test_mirrored_training_needs_the_tensorflow_backend(make_settings):
    with pytest.raises(ConfigError, match="trainer.distribution='mirrored': needs trainer.backend=tensorflow"):
        make_settings("trainer.backend=jax", "trainer.distribution=mirrored")
    assert make_settings("trainer.backend=jax").trainer.distribution.value == "auto"


def test_cli_refuses_a_bad_value_in_one_line_without_importing_tensorflow(tmp_path):
    result = run_tfrexp("pipeline.batch_size=0", f"paths.output_dir={tmp_path}", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert errors == ["tfrexp: error: pipeline.batch_size=0: must be > 0"]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "tfrexp.config" in imported and "tensorflow" not in imported


def test_cli_reports_compose_errors_without_traceback(tmp_path):
    result = run_tfrexp("pipeline.batch_size=abc", f"paths.output_dir={tmp_path}")
    assert result.returncode != 0
    assert "pipeline.batch_size" in result.stderr and "'abc'" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_help_says_what_tfrexp_is_then_lists_groups_and_examples():
    result = run_tfrexp("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("tfrexp: configuration-driven TensorFlow experiments.")
    assert "is powered by Hydra" not in result.stdout
    examples = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("tfrexp ")]
    assert len(examples) == 3 and any(" -m " in line for line in examples)
    for group in ("dataset: ", "writer: ", "pipeline: ", "model: ", "trainer: ", "tracking: ", "paths: "):
        assert group in result.stdout
    assert "pipeline: autotune, deterministic, walkthrough" in result.stdout
    assert "mnist_tfds" in result.stdout and "cnn_small" in result.stdout and "== Config ==" in result.stdout


def test_experiment_overlays_set_values_across_groups(tmp_path):
    mnist = config.to_settings(compose_config("experiment=mnist_seed", f"paths.output_dir={tmp_path}"))
    assert mnist.model["_target_"].endswith("build_cnn") and mnist.model["convs_per_block"] == 1
    assert (mnist.pipeline.batch_size, mnist.pipeline.repeat, mnist.trainer.epochs) == (32, Repeat.infinite, 2)
    catdog = config.to_settings(compose_config("experiment=catdog_seed", f"dataset.source.path={tmp_path}",
                                               f"paths.output_dir={tmp_path}"))
    assert catdog.dataset.name == "catdog" and list(catdog.dataset.image_shape) == [150, 150, 3]
    assert catdog.model["_target_"] == "tfrexp.models.catdog.build_catdog_cnn" and catdog.pipeline.batch_size == 32


@pytest.mark.parametrize(("direction", "optuna"), [("max", "maximize"), ("min", "minimize")])
def test_the_search_direction_follows_the_objective_direction(tmp_path, direction, optuna):
    cfg = run_context.compose("hparams_search=mnist_optuna", f"trainer.objective_direction={direction}",
                      f"paths.output_dir={tmp_path}", return_hydra_config=True)
    assert str(cfg.hydra.sweeper.direction) == optuna
