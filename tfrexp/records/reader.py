"""The one place that opens and parses record shards: used by the pipeline, verify and the benchmark.

Raw records are parsed a whole batch at once (`tf.io.parse_example` on the batch: far cheaper per example);
PNG and JPEG records are decoded one image at a time before batching, in parallel.

Every function handed to tf.data here and in the pipeline is wrapped in `plain`: tf.data otherwise runs it
through AutoGraph, which reads its Python source and rewrites `if`/`for` on tensors into graph ops. Ours have
none; the rewrites took 0.5 s of building the pipelines, and a run reached its first step about 0.3 s sooner
without them (the median difference within 14 pairs of runs, 2026-12-06; docs/benchmarks.md#start-up).
"""

from __future__ import annotations

import tensorflow as tf

from tfrexp.config.schema import Compression, ImageEncoding
from tfrexp.records.schema import IMAGE, LABEL

plain = tf.autograph.experimental.do_not_convert  # traced as written, no AutoGraph rewrite (see above)

_FEATURE_SPEC = {
    IMAGE: tf.io.FixedLenFeature([], tf.string),
    LABEL: tf.io.FixedLenFeature([], tf.int64),
}


def compression_type(compression: Compression) -> str:
    """The compression argument TFRecordWriter and TFRecordDataset take."""
    return "" if compression is Compression.none else compression.value


def open_shard(path: str | tf.Tensor, compression: Compression) -> tf.data.Dataset:
    """One shard's serialized records."""
    return tf.data.TFRecordDataset(path, compression_type=compression_type(compression))


def parse_batch(serialized: tf.Tensor, image_shape: list[int]) -> tuple[tf.Tensor, tf.Tensor]:
    """A batch of serialized raw records -> (uint8 images [B, H, W, C], int64 labels [B])."""
    features = tf.io.parse_example(serialized, _FEATURE_SPEC)
    pixels = tf.io.decode_raw(features[IMAGE], tf.uint8)
    return tf.reshape(pixels, [-1, *image_shape]), features[LABEL]


def parse_one(serialized: tf.Tensor, image_shape: list[int], encoding: ImageEncoding) -> tuple[tf.Tensor, tf.Tensor]:
    """One serialized record -> (uint8 image [H, W, C], int64 label)."""
    features = tf.io.parse_single_example(serialized, _FEATURE_SPEC)
    if encoding is ImageEncoding.raw:
        image = tf.reshape(tf.io.decode_raw(features[IMAGE], tf.uint8), image_shape)
    else:
        image = tf.io.decode_image(features[IMAGE], channels=image_shape[-1], expand_animations=False)
    return tf.ensure_shape(image, image_shape), features[LABEL]


def parse_each(records: tf.data.Dataset, encoding: ImageEncoding, image_shape: list[int],
               parallel: int = tf.data.AUTOTUNE, deterministic: bool = True) -> tf.data.Dataset:
    """Serialized records -> one (uint8 image [H, W, C], int64 label) per record, decoded one at a time, in
    parallel (what an in-memory cache of PNG or JPEG records keeps)."""
    return records.map(plain(lambda serialized: parse_one(serialized, image_shape, encoding)),
                       num_parallel_calls=parallel, deterministic=deterministic)


def parse_batches(batches: tf.data.Dataset, image_shape: list[int], parallel: int = tf.data.AUTOTUNE,
                  deterministic: bool = True) -> tf.data.Dataset:
    """Batches of serialized raw records -> parsed (uint8 images [B, H, W, C], int64 labels [B]), in parallel."""
    return batches.map(plain(lambda serialized: parse_batch(serialized, image_shape)),
                       num_parallel_calls=parallel, deterministic=deterministic)


def batch_and_parse(
    records: tf.data.Dataset, encoding: ImageEncoding, image_shape: list[int], batch_size: int,
    parallel: int = tf.data.AUTOTUNE, deterministic: bool = True, per_example: bool = False,
) -> tf.data.Dataset:
    """Serialized records -> batches of (uint8 images [B, H, W, C], int64 labels [B]). Raw records are parsed
    a batch at a time unless `per_example`; PNG and JPEG records are always decoded one at a time."""
    if encoding is ImageEncoding.raw and not per_example:
        records = records.batch(batch_size, num_parallel_calls=parallel, deterministic=deterministic)
        return parse_batches(records, image_shape, parallel, deterministic)
    decoded = parse_each(records, encoding, image_shape, parallel, deterministic)
    return decoded.batch(batch_size, num_parallel_calls=parallel, deterministic=deterministic)
