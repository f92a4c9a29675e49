"""Writer: one generation folder (vectors, ids, FAISS indexes, manifest), published atomically.

``GenerationWriter(root)`` is generic over the root folder and the set names: ``tuwen index``
writes the competition sets under ``$TUWEN_HOME/index``, and the same writer stores any other
embeddings (a corpus under ``$TUWEN_HOME/corpora/<name>``) in the layout ``indexer.index_files``
describes and ``index_files.load_current(root)`` reads back::

    with GenerationWriter(root, index_factory=None) as writer:
        writer.write_set("image_candidates", ids, vectors, searchable=True)   # + FAISS index
        writer.write_set("text_queries", ids, vectors, searchable=False)      # vectors only
        final = writer.publish(model_spec=..., model_id=..., arch=..., embed_dim=...)

Everything is written under ``root/.tmp-*``; ``publish`` seals it with the manifest, renames it
to ``gen-*`` and then switches ``root/CURRENT``. Leaving the block without publishing (an
exception, Ctrl-C) removes the temporary folder; a killed process leaves it for the next
publish to prune. Either way the previous live generation is untouched.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from indexer import index_files
from indexer.faiss_factory import build_index
from indexer.manifest import MANIFEST_VERSION, Manifest

_SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


class GenerationWriter:
    def __init__(self, root: Path, *, index_factory: str | None = None):
        self.root = Path(root)
        self.index_factory = index_factory  # None: faiss_factory picks by size
        self.tmp: Path | None = None
        self.sets: list[str] = []
        self.counts: dict[str, int] = {}
        self.index_factories: dict[str, str] = {}
        self.published: Path | None = None

    def __enter__(self) -> GenerationWriter:
        self.tmp = index_files.new_generation_dir(self.root)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.published is None and self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _folder(self) -> Path:
        if self.tmp is None or self.published is not None:
            raise RuntimeError("GenerationWriter: write inside `with writer:` and before publish()")
        return self.tmp

    def write_set(self, name: str, ids: list[str], vectors: np.ndarray, *, searchable: bool) -> None:
        """Store one set: vectors and ids, and for a searchable set its FAISS index."""
        folder = self._folder()
        if not _SET_NAME.fullmatch(name) or name == "manifest":
            raise ValueError(f"bad set name {name!r}: letters, digits, '_' and '-' only")
        if name in self.counts:
            raise ValueError(f"set {name} written twice")
        index_files.save_vectors(folder, name, ids, vectors)
        if searchable:
            index, used = build_index(np.asarray(vectors, dtype=np.float32), factory=self.index_factory)
            index_files.save_faiss(folder, name, index)
            self.index_factories[name] = used
        self.sets.append(name)
        self.counts[name] = len(ids)

    def read_set(self, name: str) -> tuple[list[str], np.ndarray]:
        """A set written so far: its ids and its vectors (memory-mapped from the temporary folder)."""
        folder = self._folder()
        if name not in self.counts:
            raise KeyError(name)
        ids = json.loads((folder / f"{name}.ids.json").read_text(encoding="utf-8"))
        return ids, np.load(folder / f"{name}.npy", mmap_mode="r")

    def file(self, name: str) -> Path:
        """The path of one more file of the generation (e.g. ``<set>.qbnorm.npz``), to be written
        before ``publish``, which fsyncs it with the rest."""
        if "/" in name or name.startswith(".") or name == "manifest.json":
            raise ValueError(f"bad file name {name!r}")
        return self._folder() / name

    def write_columns(self, columns: Any, *, set_name: str | None = None) -> None:
        """Store the items' columns (``indexer.collection.Columns``): what a search returns, so the
        server needs no database. A corpus's go to ``columns/``, a competition set's to ``columns/<set>/``."""
        columns.save(index_files.columns_dir(self._folder(), set_name))

    def manifest(self, **model: Any) -> Manifest:
        """The manifest of what was written, with the model fields given (model_spec, model_id...)."""
        return Manifest(
            version=MANIFEST_VERSION,
            **model,
            sets=list(self.sets),
            index_factories=dict(self.index_factories),
            counts=dict(self.counts),
            created_at=time.time(),
        )

    def publish(self, **model: Any) -> Path:
        """Seal the folder with its manifest and make it the live generation of ``root``."""
        manifest = self.manifest(**model)
        self.published = index_files.publish_generation(self.root, self._folder(), manifest)
        return self.published
