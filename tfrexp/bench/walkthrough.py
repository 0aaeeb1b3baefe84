"""The baselines: the MNIST walkthrough's writer and reader, as it wrote them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf


def write(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """The walkthrough's writer: one Example per image, the array through tf.io.serialize_tensor."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for image, label in zip(images, labels):
            height, width, depth = image.shape
            feature = {
                "height": tf.train.Feature(int64_list=tf.train.Int64List(value=[height])),
                "width": tf.train.Feature(int64_list=tf.train.Int64List(value=[width])),
                "depth": tf.train.Feature(int64_list=tf.train.Int64List(value=[depth])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
                "image_raw": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[tf.io.serialize_tensor(image).numpy()])
                ),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def pipeline(path: Path, batch_size: int, shuffle: int) -> tf.data.Dataset:
    """The walkthrough's reader: parse_single_example and parse_tensor per example."""
    spec = {name: tf.io.FixedLenFeature([], tf.int64) for name in ("height", "width", "depth", "label")}
    spec["image_raw"] = tf.io.FixedLenFeature([], tf.string)

    def parse(record):
        features = tf.io.parse_single_example(record, spec)
        image = tf.io.parse_tensor(features["image_raw"], out_type=tf.uint8)
        return tf.ensure_shape(image, [28, 28, 1]), features["label"]

    dataset = tf.data.TFRecordDataset(str(path)).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.shuffle(shuffle).batch(batch_size).prefetch(tf.data.AUTOTUNE)
