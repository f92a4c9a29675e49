"""The manifest of an index generation: one typed model, read and written here only.

``manifest.json`` stays plain, indented JSON (a person can read it). Version history:

1. written before versioning: no ``version`` and no ``sets`` key (the sets are the
   ``<set>.npy`` files in the folder); still loads.
2. adds ``version`` and ``sets`` (the stored sets, in write order).

A manifest of a newer version than this code knows, or one that is not a manifest at all, is
refused with a TuwenError that names the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.errors import TuwenError

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 2


class Manifest(BaseModel):
    """What a generation holds and which model made it."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    version: int = 1  # absent in the manifests written before versioning
    model_spec: str
    model_id: str
    arch: str = ""
    embed_dim: int = 0
    precision: str = ""
    text_precision: str = ""
    sets: list[str] = Field(default_factory=list)
    index_factories: dict[str, str] = Field(default_factory=dict)  # the searchable sets
    counts: dict[str, int] = Field(default_factory=dict)
    created_at: float = 0.0
    # what the vectors were encoded from, for generations of a corpus: its name, rows and the
    # fingerprint of its items (a changed corpus makes its embeddings stale)
    source: dict[str, Any] | None = None

    @field_validator("version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if not 1 <= v <= MANIFEST_VERSION:
            raise ValueError(
                f"manifest version {v} is not one this tuwen reads (1 to {MANIFEST_VERSION}): "
                "upgrade tuwen or rebuild the index"
            )
        return v

    @classmethod
    def parse(cls, data: dict | Manifest, *, source: str = "manifest") -> Manifest:
        """A Manifest from a dict (an older one included), or a TuwenError saying what is wrong."""
        if isinstance(data, Manifest):
            return data
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '-'} {e['msg']}" for e in exc.errors())
            raise TuwenError(
                f"{source} is not a valid index manifest ({problems}): rerun `tuwen index`"
            ) from exc

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TuwenError(f"cannot read {path}: {exc}: rerun `tuwen index`") from exc
        if not isinstance(data, dict):
            raise TuwenError(f"{path} is not a valid index manifest (not a JSON object): rerun `tuwen index`")
        return cls.parse(data, source=str(path))

    def write(self, folder: Path) -> Path:
        path = folder / MANIFEST_FILE
        path.write_text(json.dumps(self.model_dump(), ensure_ascii=False, indent=1), encoding="utf-8")
        return path
