"""A record version's split -> a batched tf.data.Dataset of (uint8 images, int64 labels).

Counts come from the manifest, so the dataset has a known cardinality (Keras shows a progress bar with an
ETA) and no pass over the data is ever spent counting.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from tfrexp.config.schema import Cache, ImageEncoding, Parse, PipelineConfig, Repeat
from tfrexp.errors import ConfigError
from tfrexp.records import reader
from tfrexp.records.manifest import Manifest


@dataclass(frozen=True)
class FitPlan:
    """How `fit` walks the training dataset under a repeat strategy."""

    epochs: int  # fit's `epochs`
    steps_per_epoch: int | None  # fit's `steps_per_epoch`; None: the dataset's own length
    total_steps: int  # optimizer steps over the whole run, for the learning-rate schedule
    examples_per_epoch: int  # examples one fit epoch consumes


def fit_plan(num_examples: int, settings: PipelineConfig, epochs: int) -> FitPlan:
    batches_per_pass = math.ceil(num_examples / settings.batch_size)
    if settings.repeat is Repeat.infinite:
        return FitPlan(epochs, batches_per_pass, epochs * batches_per_pass, batches_per_pass * settings.batch_size)
    if settings.repeat is Repeat.epochs:
        steps = math.ceil(epochs * num_examples / settings.batch_size)
        return FitPlan(1, None, steps, epochs * num_examples)
    return FitPlan(epochs, None, epochs * batches_per_pass, num_examples)


def _cache_mode(manifest: Manifest, split: str, settings: PipelineConfig) -> Cache:
    """auto: memory when the split's records, decoded, fit the budget (the manifest knows their size)."""
    if settings.cache is not Cache.auto:
        return settings.cache
    height, width, channels = manifest.image_shape
    decoded_mb = manifest.splits[split].num_examples * (height * width * channels + 64) / 1e6
    return Cache.memory if decoded_mb <= settings.cache_budget_mb else Cache.none


class ReadyTimes:
    """When each batch of a pipeline became ready, in delivery order (see `build_dataset(ready_times=...)`)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def stamp(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        tf.py_function(lambda: self.times.append(time.perf_counter()), [], [])
        return images, labels


# Raw records parsed a batch at a time are read, cached and shuffled in blocks, never one record at a time: a
# tf.data stage costs about a microsecond per element whatever it does (a profile, 2026-12-05), and a 784-byte
# MNIST record has so little work in it that reading, interleaving and shuffling records one by one held the
# uncached pipeline to about 43% of the same batches from memory; in blocks, 92% (docs/benchmarks.md). A block
# is about this many bytes of consecutive records of one shard:
_BLOCK_BYTES = 256 * 1024
# Each batch is drawn from a chunk of about this many blocks, from as many places of the shuffled stream,
# permuted as a whole: so a batch does not hold one block's neighbours only (a folder's shards hold one class).
_BLOCKS_PER_CHUNK = 8


def _block_records(manifest: Manifest) -> int:
    """Records per block: about _BLOCK_BYTES of them (334 of MNIST, 3 of 150x150 photos)."""
    return max(1, _BLOCK_BYTES // math.prod(manifest.image_shape))


def build_dataset(
    directory: Path,
    manifest: Manifest,
    split: str,
    settings: PipelineConfig,
    *,
    training: bool,
    seed: int = 0,
    epochs: int = 1,
    cache_dir: Path | None = None,
    ready_times: ReadyTimes | None = None,
) -> tf.data.Dataset:
    """Raw records parsed a batch at a time (the default): shards -> interleave blocks of records (see
    _BLOCK_BYTES) -> (cache) -> shuffle blocks -> chunks, each permuted and parsed -> repeat -> batch ->
    prefetch. Otherwise shards -> interleave records -> (cache) -> shuffle -> repeat -> batch -> parse ->
    prefetch; PNG and JPEG records cached in memory are decoded before the cache, so that later epochs only
    shuffle and batch pixels.

    Evaluation datasets (training=False) are neither shuffled nor repeated.
    """
    shards = manifest.splits[split].shards
    files = [str(path) for path in manifest.shard_paths(directory, split)]
    num_examples = manifest.splits[split].num_examples
    parallel = tf.data.AUTOTUNE if settings.parallelism == "autotune" else settings.parallelism
    order = settings.deterministic
    shuffled = training and settings.shuffle_buffer > 0
    # Unshuffled training takes records one at a time from every shard in turn, as before: blocks unshuffled
    # would make each batch one shard's neighbours (a folder's shards hold one class each).
    in_blocks = (manifest.image_encoding is ImageEncoding.raw and settings.parse is Parse.batch
                 and (shuffled or not training))
    block = _block_records(manifest) if in_blocks else 1
    compression = manifest.compression

    def read(path: tf.Tensor, count: tf.Tensor) -> tf.data.Dataset:
        records = reader.open_shard(path, compression)
        if not in_blocks:
            return records
        # The manifest's count of each shard; TensorFlow raises if the shard holds a different number.
        return records.apply(tf.data.experimental.assert_cardinality(count)).batch(block)

    counts = tf.constant([shard.num_examples for shard in shards], tf.int64)
    dataset = tf.data.Dataset.from_tensor_slices((files, counts))
    if training:
        # A new shard order every epoch, so the shuffle buffer mixes different neighbours each time.
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(
        reader.plain(read),
        cycle_length=len(files),
        # TensorFlow refuses more parallel readers than files being cycled over.
        num_parallel_calls=parallel if parallel == tf.data.AUTOTUNE else min(parallel, len(files)),
        deterministic=order,
    )
    cached = _cache_mode(manifest, split, settings) is Cache.memory
    # PNG and JPEG records cached in memory are decoded once, in the first epoch, and kept decoded: a later epoch
    # of 1,000 cats-vs-dogs JPEG records took 0.019 CPU seconds instead of 0.184 (2026-12-06). Raw records are
    # cached as they are: parsing a batch of them is cheap (a later epoch of MNIST, 0.27 CPU s either way), and
    # parsing them before the cache made MNIST's first epoch slower (0.64 s against 0.40 s of wall time).
    decoded = cached and manifest.image_encoding is not ImageEncoding.raw
    if decoded:
        dataset = reader.parse_each(dataset, manifest.image_encoding, manifest.image_shape, parallel, order)
    if not in_blocks:
        # The manifest's count becomes the cardinality; TensorFlow raises if the records hold a different number.
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(num_examples))
    if cached:
        dataset = dataset.cache()
    elif settings.cache is Cache.disk:
        if cache_dir is None:
            raise ConfigError("pipeline.cache='disk': needs a cache directory (the run folder gives one)")
        cache_dir.mkdir(parents=True, exist_ok=True)
        dataset = dataset.cache(str(cache_dir / f"{manifest.fingerprint}-{split}"))
    if shuffled:
        # Shuffle before repeat: every pass is a full permutation, so each example is seen once per pass.
        buffer = max(1, min(settings.shuffle_buffer, num_examples) // block)
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if in_blocks:
        # Parsed before repeat, so that no chunk mixes two passes.
        dataset = _parsed_chunks(dataset, manifest, settings.batch_size, block, shuffled, seed, parallel, order)
    if training and settings.repeat is Repeat.infinite:
        dataset = dataset.repeat()
    elif training and settings.repeat is Repeat.epochs:
        dataset = dataset.repeat(epochs)
    if in_blocks:
        # Cut into batches across the passes, as batching records does; only the stream's last batch is short.
        dataset = dataset.rebatch(settings.batch_size)
        if training and settings.repeat is Repeat.infinite:
            batches = tf.data.INFINITE_CARDINALITY
        else:
            passes = epochs if training and settings.repeat is Repeat.epochs else 1
            batches = math.ceil(passes * num_examples / settings.batch_size)
        # Known cardinality: Keras shows a progress bar with an ETA.
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    elif decoded:
        dataset = dataset.batch(settings.batch_size, num_parallel_calls=parallel, deterministic=order)
    else:
        dataset = reader.batch_and_parse(dataset, manifest.image_encoding, manifest.image_shape, settings.batch_size,
                                         parallel, order, per_example=settings.parse is Parse.per_example)
    if ready_times is not None:
        # Sequential, right before the buffer: it runs in delivery order, once per batch (a few microseconds).
        dataset = dataset.map(reader.plain(ready_times.stamp))
    # One machine: a MirroredStrategy splits each batch over its replicas. No file sharding to rewrite
    # (it is for several workers, which Keras 3 does not train on), so none is attempted.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def _parsed_chunks(blocks: tf.data.Dataset, manifest: Manifest, batch_size: int, block: int, shuffled: bool,
                   seed: int, parallel: int, order: bool) -> tf.data.Dataset:
    """Blocks of serialized raw records -> parsed (images, labels) of many records each, to be cut into batches.
    Shuffled: the blocks are regrouped into chunks of about _BLOCKS_PER_CHUNK blocks, a whole number of batches
    each, and every chunk is permuted as one before it is parsed."""
    shape = manifest.image_shape
    if not shuffled:
        return reader.parse_batches(blocks, shape, parallel, order)
    chunk = batch_size * math.ceil(_BLOCKS_PER_CHUNK * block / batch_size)
    # One seed per chunk, drawn anew each pass and the same on every run with this seed (a stateless shuffle:
    # a random op's own state would be drawn from in whatever order the parallel calls run).
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def permuted(serialized: tf.Tensor, chunk_seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        order_seed = tf.stack([chunk_seed, tf.zeros_like(chunk_seed)])
        return reader.parse_batch(tf.random.experimental.stateless_shuffle(serialized, order_seed), shape)

    chunks = tf.data.Dataset.zip(blocks.rebatch(chunk), seeds)
    return chunks.map(reader.plain(permuted), num_parallel_calls=parallel, deterministic=order)
