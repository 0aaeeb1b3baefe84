"""The manifest beside every record version, and the fingerprint that names the version.

A version lives in `<records_dir>/<dataset>/<fingerprint>/`; the manifest is written last, so a
directory with a manifest is a finished version. Counts come from here, never from reading records.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tfrexp.config.schema import Compression, ImageEncoding, WriterConfig
from tfrexp.errors import RecordsError
from tfrexp.records.schema import FORMAT_VERSION, RecordSchema

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class Shard:
    file: str
    num_examples: int
    num_bytes: int


@dataclass(frozen=True)
class SplitInfo:
    shards: list[Shard]

    @property
    def num_examples(self) -> int:
        return sum(shard.num_examples for shard in self.shards)


@dataclass(frozen=True)
class RecordSettings:
    """The writer settings that change the records' bytes (`force` and `num_workers` do not): the manifest's
    `writer`, and part of the fingerprint."""

    shard_size_mb: float
    compression: Compression
    image_encoding: ImageEncoding
    jpeg_quality: int

    @classmethod
    def of(cls, writer: WriterConfig) -> RecordSettings:
        return cls(writer.shard_size_mb, writer.compression, writer.image_encoding, writer.jpeg_quality)

    def to_json(self) -> dict:
        return {"shard_size_mb": self.shard_size_mb, "compression": self.compression.value,
                "image_encoding": self.image_encoding.value, "jpeg_quality": self.jpeg_quality}

    @classmethod
    def from_json(cls, data: dict) -> RecordSettings:
        return cls(float(data["shard_size_mb"]), Compression(data["compression"]),
                   ImageEncoding(data["image_encoding"]), int(data["jpeg_quality"]))


@dataclass(frozen=True)
class Manifest:
    dataset: str
    fingerprint: str
    schema: RecordSchema
    splits: dict[str, SplitInfo]
    class_names: list[str]
    writer: RecordSettings
    source: dict  # the source's identity: whatever its kind says determines the examples
    created_at: str
    tool_version: str
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"} of every file found but not written
    files_found: int | None = None  # sources of files: every file found (= kept + skipped)

    @property
    def image_encoding(self) -> ImageEncoding:
        return self.schema.image_encoding

    @property
    def image_shape(self) -> list[int]:
        return list(self.schema.image_shape)

    @property
    def compression(self) -> Compression:
        return self.writer.compression

    def shard_paths(self, directory: Path, split: str) -> list[Path]:
        if split not in self.splits:
            raise RecordsError(f"{directory}: no split {split!r} (the manifest has {sorted(self.splits)})")
        return [directory / shard.file for shard in self.splits[split].shards]

    def to_json(self) -> str:
        data = {
            **{name: getattr(self, name) for name in ("dataset", "fingerprint", "class_names", "source", "created_at",
                                                     "tool_version", "skipped", "files_found")},
            "schema": self.schema.to_json(),
            "writer": self.writer.to_json(),
            "splits": {name: {"shards": [asdict(shard) for shard in info.shards]}
                       for name, info in self.splits.items()},
        }
        return json.dumps(data, indent=2, sort_keys=True)


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
        # A split's count is the sum of its shards'; older manifests also stored it, which is ignored.
        splits = {name: SplitInfo([Shard(**shard) for shard in info["shards"]])
                  for name, info in data.pop("splits").items()}
        return Manifest(**{**data, "splits": splits, "schema": RecordSchema.from_json(data["schema"]),
                           "writer": RecordSettings.from_json(data["writer"])})
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RecordsError(f"{path}: unreadable manifest ({error}); rebuild with writer.force=true") from None


def fingerprint(source_identity: dict, writer: RecordSettings) -> str:
    """A short digest of everything that determines the bytes of the records."""
    payload = json.dumps({"source": source_identity, "writer": writer.to_json(), "format_version": FORMAT_VERSION},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
