"""What the writer consumes from any source: each split's items in a fixed order with the function that makes
an encoded example of one, and the files that were left out with why. Sources implement `ExampleSource`;
records never import a source.

No TensorFlow here: shard tasks import these types in worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, Union

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
class Examples:
    """A data set planned for writing: each split's items in a fixed order, and the one function that turns an
    item into an example. `prepare` and the items are picklable: shard tasks call it in worker processes and
    on Ray nodes, which never import TensorFlow for it."""

    splits: dict[str, Sequence[Any]]  # split -> items (an image file to read, an in-memory image), in order
    prepare: Callable[[Any], Example]  # item -> (encoded image, label) or Skipped; never raises on bad content
    class_names: list[str]
    skipped: list[Skipped] = field(default_factory=list)  # found but never read (not images, unlabelled)
    files_found: int | None = None  # sources of files: every file found (= kept + skipped when written)
    decodes_files: bool = False  # `prepare` reads and decodes files: worth a process per core


class ExampleSource(Protocol):
    """A data set as the writer sees it."""

    name: str  # the dataset's name: the folder under records/ and the shards' prefix
    image_shape: list[int]  # [height, width, channels] of every example

    def identity(self) -> dict:
        """Everything that determines the examples (content and settings), cheaply: it enters the fingerprint,
        and a reused version is found without reading the data."""

    def examples(self, encoder: PixelEncoder) -> Examples:
        """Every split's items, in a fixed order, and how to prepare one."""
