"""The default experiment as configured: the fast net, the one-cycle-like schedule, the optimizer's betas;
and the Keras backend switch. (Accuracy and time are the benchmark's job: tfrexp-bench --full.)"""

from __future__ import annotations

import math

import keras
import pytest

from tfrexp.training import fit
from tfrexp.training.backend import prepare_backend
from tfrexp.config import Backend, Toggle
from tfrexp.errors import ConfigError
from tfrexp.experiment import model_builder
from tfrexp.pipeline import fit_plan


def _multiply_adds(model: keras.Model) -> int:
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            height, width, channels = layer.output.shape[1:]
            kernel = math.prod(layer.kernel_size) * layer.input.shape[-1]
            total += height * width * channels * kernel
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return total


def test_the_default_is_the_fast_net_with_its_schedule(make_settings):
    settings = make_settings()
    model = model_builder(settings.model)(input_shape=[28, 28, 1], num_classes=10)
    assert [layer.kernel_size for layer in model.layers if isinstance(layer, keras.layers.Conv2D)] == [(5, 5),
                                                                                                      (3, 3)]
    assert 1.1e6 < _multiply_adds(model) < 1.4e6, "conv 24 5x5 - pool - conv 32 3x3 - pool - dense 256 - 10"
    # Batch norm works on the pooled values: [12, 12, 24] after the first block, not the conv's [24, 24, 24].
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert [tuple(norm.input.shape[1:]) for norm in norms[:2]] == [(12, 12, 24), (5, 5, 32)]
    trainer = settings.trainer
    assert (settings.pipeline.batch_size, trainer.epochs, trainer.learning_rate) == (256, 1, 0.015)
    plan = fit_plan(54_000, settings.pipeline, trainer.epochs)
    assert plan.total_steps == math.ceil(54_000 / 256)
    fit.compile_model(model, trainer, plan, fit.configure_device(Toggle.off, Toggle.off))
    schedule = model.optimizer._learning_rate
    warmup = int(trainer.warmup_fraction * plan.total_steps)
    assert math.isclose(float(schedule(warmup)), trainer.learning_rate, rel_tol=1e-6)
    assert float(schedule(warmup // 2)) < trainer.learning_rate and float(schedule(plan.total_steps)) < 1e-6
    assert (float(model.optimizer.beta_1), float(model.optimizer.beta_2)) == (0.7, 0.9)


def test_the_previous_default_and_the_walkthrough_recipe_stay_available(make_settings):
    deep = make_settings("model=cnn_deep").model
    assert (deep["convs_per_block"], deep["filters"]) == (2, [32, 64])
    seed = make_settings("experiment=mnist_seed")
    assert (seed.trainer.beta_1, seed.trainer.beta_2, seed.trainer.learning_rate) == (0.9, 0.999, 0.001)
    assert seed.pipeline.batch_size == 32 and seed.model["convs_per_block"] == 1


def test_the_backend_is_checked_before_keras_loads(make_settings):
    assert make_settings().trainer.backend is Backend.tensorflow
    jax = make_settings("trainer.backend=jax").trainer
    with pytest.raises(ConfigError, match="Keras is already loaded with the tensorflow backend"):
        prepare_backend(jax)  # this test process imported Keras on TensorFlow
    prepare_backend(make_settings().trainer)  # the same backend again: fine
    with pytest.raises(Exception, match="trainer.backend"):
        make_settings("trainer.backend=torch")
