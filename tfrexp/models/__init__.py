"""Keras model builders, referenced from conf/model/*.yaml by `_target_`.

Every builder takes `input_shape` and `num_classes` (filled in from the dataset) plus its own
hyperparameters, takes uint8 images and returns float32 logits.
"""
