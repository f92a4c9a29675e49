"""Index generations on disk: vectors, ids, FAISS indexes and a manifest, swapped atomically.

Layout under ``$TUWEN_HOME/index``::

    CURRENT                      name of the live generation (replaced atomically: common.files)
    gen-<time to the µs>-<rand>/
        manifest.json            ``indexer.manifest.Manifest``: model, sets, counts, index types
        <set>.npy, <set>.ids.json    vectors (float32, row i = id i) of each set; for the
                                     competition: image_candidates, text_candidates,
                                     text_queries, image_queries
        <set>.faiss              for the searchable sets (the two candidate sets)
        <set>.qbnorm.npz         QB-Norm's statistics of a searchable set against its query
                                 bank (``indexer.query_bank``); bank_texts / bank_images: the
                                 competition's bank (training captions and images)
        columns/<set>/           what a search returns of the searchable sets' items (captions,
                                 image paths): ``indexer.collection.Columns``; a corpus's
                                 generation keeps its items' columns in ``columns/``

A generation is written under a temporary name and renamed into place before CURRENT is
switched, so a reader sees either the old generation or the new one, never a half-built one.
Nothing here is specific to ``index/``: ``indexer.encode.writer.GenerationWriter`` writes the
same layout under any root folder, and ``load_current`` reads it back.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from common.errors import TuwenError
from common.files import publish_folder, write_atomic
from indexer import store
from indexer.manifest import MANIFEST_FILE, Manifest
from indexer.query_bank import SetBank, load_banks

# The sets of a competition generation are named after the store collections they encode.
CANDIDATE_SETS = (store.IMAGE_CANDIDATES, store.TEXT_CANDIDATES)
QUERY_SETS = (store.TEXT_QUERIES, store.IMAGE_QUERIES)
CURRENT = "CURRENT"
COLUMNS = "columns"  # the items' columns (ids, captions, image paths, times, attributes)
KEEP_GENERATIONS = 2  # the live one and the one before, which a server may still be reading


def new_generation_dir(index_dir: Path) -> Path:
    index_dir.mkdir(parents=True, exist_ok=True)
    tmp = index_dir / f".tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def save_vectors(folder: Path, name: str, ids: list[str], vectors: np.ndarray) -> None:
    if len(ids) != len(vectors):
        raise ValueError(f"{name}: {len(ids)} ids for {len(vectors)} vectors")
    np.save(folder / f"{name}.npy", np.ascontiguousarray(vectors, dtype=np.float32))
    _write_json(folder / f"{name}.ids.json", ids)


def save_faiss(folder: Path, name: str, index: faiss.Index) -> None:
    faiss.write_index(index, str(folder / f"{name}.faiss"))


def _write_json(path: Path, obj) -> None:
    # Inside a generation's temporary folder, which ``publish_folder`` fsyncs and renames whole.
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")


def columns_dir(generation: Path, set_name: str | None = None) -> Path:
    """Where a generation keeps its items' columns: ``columns/`` (a corpus) or ``columns/<set>/``."""
    return generation / COLUMNS if set_name is None else generation / COLUMNS / set_name


def publish_generation(index_dir: Path, tmp_dir: Path, manifest: Manifest | dict) -> Path:
    """Seal ``tmp_dir`` with its manifest, rename it into place and make it the live one."""
    manifest = Manifest.parse(manifest)
    manifest = manifest.model_copy(update={"created_at": manifest.created_at or time.time()})
    manifest.write(tmp_dir)
    name = generation_name()
    previous = current_generation_name(index_dir)
    final = publish_folder(tmp_dir, index_dir / name)  # its files fsynced, then renamed
    write_atomic(index_dir / CURRENT, name)
    prune_generations(index_dir, keep={name, previous})
    return final


def generation_name(now: float | None = None) -> str:
    """``gen-<local time to the microsecond>-<random>``: names sort in publishing order.

    Why the microseconds: with whole seconds, two builds in the same second sorted by their
    random suffix, and pruning could drop the one a server had just been serving.
    """
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(now)) + f"{now % 1:.6f}"[1:]
    return f"gen-{stamp}-{uuid.uuid4().hex[:6]}"


def prune_generations(index_dir: Path, *, keep: set[str | None] | None = None) -> None:
    """Drop old generations and leftovers of crashed builds, keeping the newest few.

    Never dropped: the live generation and the names in ``keep`` (``publish_generation`` passes
    the one it replaced, which a server may still be reading).
    """
    kept = {current_generation_name(index_dir), *(keep or ())}
    gens = sorted(p for p in index_dir.glob("gen-*") if p.is_dir())
    for old in gens[:-KEEP_GENERATIONS]:
        if old.name not in kept:
            shutil.rmtree(old, ignore_errors=True)
    for stale in index_dir.glob(".tmp-*"):
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)


def current_generation_name(index_dir: Path) -> str | None:
    try:
        return (index_dir / CURRENT).read_text().strip() or None
    except FileNotFoundError:
        return None


def current_generation(index_dir: Path) -> Path:
    name = current_generation_name(index_dir)
    if not name or not (index_dir / name / MANIFEST_FILE).is_file():
        raise TuwenError(f"no index in {index_dir}: run `tuwen index` first")
    return index_dir / name


@dataclass
class VectorSet:
    ids: list[str]
    vectors: np.ndarray
    index: faiss.Index | None = None  # for a searchable set


@dataclass
class LoadedIndex:
    """One generation, loaded whole: every search it answers comes from this generation only."""

    path: Path
    manifest: Manifest
    sets: dict[str, VectorSet] = field(default_factory=dict)
    banks: dict[str, SetBank] = field(default_factory=dict)  # QB-Norm, per searchable set that has one

    @property
    def model_id(self) -> str:
        return self.manifest.model_id

    def check_model(self, model_id: str) -> None:
        if model_id != self.model_id:
            raise TuwenError(
                f"the index in {self.path} was built with model {self.model_id}, not "
                f"{model_id}: rebuild it with `tuwen index --model ...` or query with that model"
            )

    def bank_vectors(self, set_name: str) -> np.ndarray | None:
        """The vectors of ``set_name``'s QB-Norm bank (rows of one of this generation's sets), in
        memory: a put item's column is computed from them (``SetBank.columns``). None without one."""
        found = self.banks.get(set_name)
        if found is None or found.bank_set not in self.sets:
            return None
        return np.asarray(self.sets[found.bank_set].vectors[found.bank_rows], dtype=np.float32)

    def search(self, name: str, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """Top-``k`` (scores, ids) in candidate set ``name`` for each row of ``queries``."""
        vs = self.sets[name]
        k = min(k, len(vs.ids))
        index = vs.index
        if index is None:
            raise TuwenError(f"{self.path}: no FAISS index for {name}")
        scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, [[vs.ids[r] for r in row if r >= 0] for row in rows]


def load_generation(path: Path) -> LoadedIndex:
    """Every set of the generation at ``path``, its vectors memory-mapped (paged in on use)."""
    manifest = Manifest.read(path)
    loaded = LoadedIndex(path, manifest)
    if manifest.sets:
        names, optional = manifest.sets, False
    else:  # version 1: the competition sets that are on disk
        names, optional = list(CANDIDATE_SETS + QUERY_SETS), True
    for name in names:
        if not (path / f"{name}.npy").is_file():
            if optional:
                continue
            raise TuwenError(
                f"{path}: the manifest lists {name} but {name}.npy is missing: rerun `tuwen index`"
            )
        ids = json.loads((path / f"{name}.ids.json").read_text(encoding="utf-8"))
        vectors = np.load(path / f"{name}.npy", mmap_mode="r")  # 2 GB at 1M, paged in on use
        faiss_file = path / f"{name}.faiss"
        index = faiss.read_index(str(faiss_file)) if faiss_file.is_file() else None
        loaded.sets[name] = VectorSet(ids, vectors, index)
    loaded.banks = load_banks(path, [n for n, vs in loaded.sets.items() if vs.index is not None])
    return loaded


def load_current(index_dir: Path) -> LoadedIndex:
    return load_generation(current_generation(index_dir))
