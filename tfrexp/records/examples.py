"""What the writer consumes from any source: ordered streams of encoded examples per split, and the files
that were left out with why. Sources implement `ExampleSource`; records never import a source.

No TensorFlow here: image-folder workers import these types in their own processes.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Iterator, Protocol, Union

from tfrexp.records.encoding import PixelEncoder


@dataclass(frozen=True)
class Skipped:
    """A file that was found but gives no example, with the reason."""

    path: str  # relative to the source's folder
    reason: str

    def as_record(self) -> dict:
        """As the manifest lists it."""
        return {"path": self.path, "reason": self.reason}


Example = Union[tuple[bytes, int], Skipped]  # (encoded image, label), or a file left out


@dataclass
class SplitExamples:
    count: int  # items in the stream: examples plus skipped files
    stream: Iterator[Example]  # in a fixed order, whatever the number of workers


@dataclass
class Examples:
    splits: dict[str, SplitExamples]
    class_names: list[str]
    skipped: list[Skipped] = field(default_factory=list)  # found but never read (not images, unlabelled)
    files_found: int | None = None  # sources of files: every file found (= kept + skipped when written)


class ExampleSource(Protocol):
    """A data set as the writer sees it."""

    name: str  # the dataset's name: the folder under records/ and the shards' prefix
    image_shape: list[int]  # [height, width, channels] of every example

    def identity(self) -> dict:
        """Everything that determines the examples (content and settings), cheaply: it enters the fingerprint,
        and a reused version is found without reading the data."""

    def examples(self, encoder: PixelEncoder, workers: int) -> AbstractContextManager[Examples]:
        """Every split as a stream of (encoded image, label) or Skipped, in a fixed order."""
