"""``tuwen export``: write result1.csv / result2.csv of the live index, each validated before it is
renamed into place (the rules themselves live in ``indexer.results``).

With ``rerank`` (``indexer.rerank``) and ``ensemble`` (several index generations, each from its
own model over the same ingested sets, their similarity matrices averaged before any re-ranking)
the top 5 are computed here from the generations' vectors; the files pass the same validation.
QB-Norm's bank: the training captions of 附件1 for text→image, the training images for
image→text (``indexer.query_bank``): the statistics ``tuwen index`` stored with the generation
when its bank was drawn with the same ``--bank-size``, else computed from its ``bank_texts`` /
``bank_images`` sets, else from a bank encoded now with the generation's model.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from common.errors import TuwenError
from common.files import atomic_path
from common.settings import Settings
from indexer import rerank, store
from indexer.index_files import LoadedIndex, load_current, load_generation
from indexer.query_bank import BANK_SETS, statistics, training_bank
from indexer.results import TASKS, TOP_K, Task, csv_chunks, has_task, validate_result
from models.encoder import open_encoder


def write_result(loaded: LoadedIndex, task: Task, out_dir: Path) -> Path:
    """Write and validate one result file, then rename it into place (a failed check leaves the old one)."""

    def write(fh: TextIO) -> None:
        for chunk in csv_chunks(loaded, task):
            fh.write(chunk)

    return write_validated(loaded, task, Path(out_dir), write)


def write_validated(loaded: LoadedIndex, task: Task, out_dir: Path, write: Callable[[TextIO], None]) -> Path:
    """``write`` the task's file into a temporary file, validate it against the index's ids with
    ``indexer.results``, then rename it into place: the one path of every result file."""
    target = out_dir / task.filename
    with atomic_path(target) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            write(fh)
        validate_result(
            tmp,
            task=task,
            query_ids=loaded.sets[task.queries].ids,
            candidate_ids=loaded.sets[task.candidates].ids,
        )
    return target


def load_ensemble(index_dir: Path, names: Sequence[str] | None) -> list[LoadedIndex]:
    """The live generation, or the named ones (folder names under ``index_dir``, or paths); refuses
    generations whose sets differ (other ids, or in another order)."""
    if not names:
        return [load_current(index_dir)]
    loaded = []
    for name in names:
        path = Path(name) if Path(name).is_dir() else index_dir / name
        if not path.is_dir():
            raise TuwenError(f"--ensemble {name}: no generation {path}")
        loaded.append(load_generation(path))
    first = loaded[0]
    for other in loaded[1:]:
        for set_name in sorted(set(first.sets) | set(other.sets)):
            if set_name in BANK_SETS.values():
                continue  # a bank is the model's own; only the ingested sets must agree
            if set_name not in first.sets or set_name not in other.sets:
                raise TuwenError(f"--ensemble: {other.path.name} and {first.path.name} differ: {set_name}")
            if first.sets[set_name].ids != other.sets[set_name].ids:
                raise TuwenError(
                    f"--ensemble: the {set_name} of {other.path.name} are not those of {first.path.name}: "
                    "index the same ingested sets with each model"
                )
    return loaded


def similarity_blocks(gens: Sequence[LoadedIndex], queries: str, candidates: str) -> Iterator[np.ndarray]:
    """Query × candidate similarities, ``rerank.CHUNK`` queries at a time, averaged over ``gens``."""
    n = len(gens[0].sets[queries].ids)
    for start in range(0, n, rerank.CHUNK):
        total = None
        for g in gens:
            block = np.asarray(g.sets[queries].vectors[start : start + rerank.CHUNK], dtype=np.float32)
            sims = block @ np.asarray(g.sets[candidates].vectors, dtype=np.float32).T
            total = sims if total is None else total + sims
        yield total / len(gens)


def encode_bank(settings: Settings, loaded: LoadedIndex, kind: str, *, size: int) -> np.ndarray:
    """QB-Norm's bank vectors of one generation: the set ``tuwen index`` stored when it was drawn
    with this ``size``, else the store's training captions (``kind`` "text") or images ("image"),
    drawn alike (``query_bank.training_bank``) and encoded now with the generation's model."""
    name = BANK_SETS[store.TEXT_QUERIES if kind == "text" else store.IMAGE_QUERIES]
    stored = loaded.sets.get(name)
    if stored is not None and _drawn(loaded, name) in (None, size):
        return np.asarray(stored.vectors, dtype=np.float32)
    bank = training_bank(settings, size=size)
    if not bank:
        raise TuwenError("qb-norm needs a query bank: ingest 附件1 (the training pairs) first")
    encoder = open_encoder(model=loaded.manifest.model_spec, settings=settings, bulk=True)
    if kind == "text":
        return encoder.encode_texts([caption for _, caption, _ in bank])
    vectors, _errors = encoder.encode_image_files([path for _, _, path in bank])
    return vectors


def _drawn(loaded: LoadedIndex, bank_set: str) -> int | None:
    """The bank size ``tuwen index`` drew ``bank_set`` with (None: not recorded)."""
    for found in loaded.banks.values():
        if found.bank_set == bank_set:
            return found.drawn
    return None


def bank_statistics(
    settings: Settings, gens: Sequence[LoadedIndex], task: Task, *, size: int
) -> rerank.QueryBankStats:
    """QB-Norm's statistics for ``task`` (its queries' bank against its candidates), averaged over
    the generations of an ensemble as their similarities are (``query_bank.statistics``: the code
    ``tuwen index`` stored a generation's own with, which one generation reuses as they are)."""
    stored = gens[0].banks.get(task.candidates)
    if len(gens) == 1 and stored is not None and stored.drawn == size:
        return stored.stats
    kind = "text" if task.queries == store.TEXT_QUERIES else "image"
    banks = [encode_bank(settings, g, kind, size=size) for g in gens]
    return statistics(banks, [g.sets[task.candidates].vectors for g in gens])[0]


def ranked(
    gens: Sequence[LoadedIndex], task: Task, method: str, stats: rerank.QueryBankStats | None
) -> Iterator[tuple[str, list[str]]]:
    """(query id, ``TOP_K`` candidate ids best first) after ``method``, in query-file order."""
    query_ids, candidate_ids = gens[0].sets[task.queries].ids, gens[0].sets[task.candidates].ids
    if len(candidate_ids) < TOP_K:
        raise TuwenError(
            f"{task.filename} needs at least {TOP_K} {task.candidates}, the index has {len(candidate_ids)}"
        )
    blocks = similarity_blocks(gens, task.queries, task.candidates)
    if method == "one-to-one":  # an assignment over the whole matrix
        blocks = iter([rerank.one_to_one(np.concatenate(list(blocks)))])
        method = "none"
    elif method == "dual-softmax":  # the normaliser over every query first, then the rows
        again = similarity_blocks(gens, task.queries, task.candidates)
        stats, method = rerank.dual_softmax_stats(again, len(candidate_ids)), "qb-norm"
    start = 0
    for block in blocks:
        top = rerank.top_k(rerank.rerank(block, method, stats=stats), TOP_K)
        for query_id, row in zip(query_ids[start : start + len(block)], top, strict=True):
            yield query_id, [candidate_ids[j] for j in row]
        start += len(block)


def write_ranked(
    rows: Iterator[tuple[str, list[str]]], task: Task, loaded: LoadedIndex, out_dir: Path
) -> Path:
    """Write ``rows`` as ``task``'s file, validated before it replaces the old one."""

    def write(fh: TextIO) -> None:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(task.header)
        for query_id, ids in rows:
            writer.writerows((query_id, rank, cid) for rank, cid in enumerate(ids, start=1))

    return write_validated(loaded, task, out_dir, write)


def export_results(
    *,
    settings: Settings,
    out: str | Path,
    echo=None,
    rerank_method: str = "none",
    ensemble: Sequence[str] | None = None,
    bank_size: int = rerank.DEFAULT_BANK_SIZE,
) -> list[Path]:
    """Write every result file the live index (or the ``ensemble``'s generations) has data for
    into ``out``, re-ranked by ``rerank_method``."""
    rerank.parse_methods(rerank_method)  # unknown names fail before any work
    if rerank_method == "qb-norm" and bank_size < 1:
        raise TuwenError(
            f"--bank-size must be at least 1 for qb-norm (its bank of training queries), not {bank_size}"
        )
    gens = load_ensemble(settings.index_dir, ensemble)
    loaded, written = gens[0], []
    for task in TASKS.values():
        if not has_task(loaded, task):
            if echo:
                echo(f"skipped {task.filename}: no {task.queries} / {task.candidates} indexed")
            continue
        if rerank_method == "none" and len(gens) == 1:
            path = write_result(loaded, task, Path(out))
        else:
            stats = None
            if rerank_method == "qb-norm":
                stats = bank_statistics(settings, gens, task, size=bank_size)
            path = write_ranked(ranked(gens, task, rerank_method, stats), task, loaded, Path(out))
        written.append(path)
        if echo:
            how = "" if rerank_method == "none" else f", {rerank_method}"
            how += f", ensemble of {len(gens)}" if len(gens) > 1 else ""
            echo(f"wrote {path} ({len(loaded.sets[task.queries].ids)} queries x {TOP_K}{how})")
    if not written:
        raise TuwenError("nothing to export: the index holds neither task's queries")
    return written
