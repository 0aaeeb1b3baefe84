"""Pictures and tables of a finished run: learning curves, the confusion matrix, per-class accuracy."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only: no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    flat = np.asarray(labels, dtype=np.int64) * num_classes + np.asarray(predictions, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(confusion: np.ndarray, class_names: list[str]) -> dict[str, dict[str, float]]:
    totals = confusion.sum(axis=1)
    return {
        name: {"accuracy": float(confusion[i, i] / totals[i]) if totals[i] else float("nan"), "count": int(totals[i])}
        for i, name in enumerate(class_names)
    }


def learning_curves_figure(history: dict[str, list[float]]) -> Figure:
    """One panel per metric (loss, accuracy, ...), train and validation against the epoch."""
    names = [name for name in history if not name.startswith("val_") and name != "learning_rate"]
    figure, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for axis, name in zip(axes[0], names):
        epochs = np.arange(1, len(history[name]) + 1)
        axis.plot(epochs, history[name], marker="o", label="train")
        if f"val_{name}" in history:
            axis.plot(epochs, history[f"val_{name}"], marker="o", label="validation")
        axis.set_xlabel("epoch")
        axis.set_title(name)
        axis.set_xticks(epochs)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    return figure


def confusion_figure(confusion: np.ndarray, class_names: list[str]) -> Figure:
    size = max(4.0, 0.55 * len(class_names) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(confusion, cmap="Blues")
    ticks = np.arange(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=45, ha="right")
    axis.set_yticks(ticks, class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = confusion.max() / 2 if confusion.size else 0
    for (row, column), count in np.ndenumerate(confusion):
        # Inside the axes: left out of what tight_layout measures, which would measure each count's text too.
        axis.text(column, row, str(count), ha="center", va="center", fontsize=8,
                  color="white" if count > threshold else "black").set_in_layout(False)
    accuracy = np.trace(confusion) / max(confusion.sum(), 1)
    axis.set_title(f"test confusion matrix (accuracy {accuracy:.2%})")
    figure.tight_layout()
    return figure
