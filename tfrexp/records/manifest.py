"""The manifest beside every record version, and the fingerprint that names the version.

A version lives in `<records_dir>/<dataset>/<fingerprint>/`; the manifest is written last, so a
directory with a manifest is a finished version. Counts come from here, never from reading records.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tfrexp.config.schema import Compression, ImageEncoding
from tfrexp.errors import RecordsError

MANIFEST_NAME = "manifest.json"


@dataclass
class Shard:
    file: str
    num_examples: int
    num_bytes: int


@dataclass
class SplitInfo:
    num_examples: int
    shards: list[Shard]


@dataclass
class Manifest:
    dataset: str
    fingerprint: str
    schema: dict
    splits: dict[str, SplitInfo]
    class_names: list[str]
    writer: dict
    source: dict
    created_at: str
    tool_version: str
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"} of every file found but not written
    files_found: int | None = None  # sources of files: every file found (= kept + skipped)

    @property
    def image_encoding(self) -> ImageEncoding:
        return ImageEncoding(self.schema["features"]["image"]["encoding"])

    @property
    def compression(self) -> Compression:
        return Compression(self.writer["compression"])

    @property
    def image_shape(self) -> list[int]:
        return list(self.schema["image_shape"])

    def shard_paths(self, directory: Path, split: str) -> list[Path]:
        if split not in self.splits:
            raise RecordsError(f"{directory}: no split {split!r} (the manifest has {sorted(self.splits)})")
        return [directory / shard.file for shard in self.splits[split].shards]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
        data["splits"] = {
            name: SplitInfo(info["num_examples"], [Shard(**shard) for shard in info["shards"]])
            for name, info in data["splits"].items()
        }
        return Manifest(**data)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RecordsError(f"{path}: unreadable manifest ({error}); rebuild with writer.force=true") from None


def fingerprint(source_identity: dict, writer_settings: dict, format_version: int) -> str:
    """A short digest of everything that determines the bytes of the records."""
    payload = json.dumps({"source": source_identity, "writer": writer_settings, "format_version": format_version},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
