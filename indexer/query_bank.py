"""QB-Norm's query bank of an index generation: drawn and summed up once, when the generation is
built, stored beside it and loaded with it (issue 21: the service answers ``"rerank": "qb-norm"``).

The bank is a bounded sample of queries that are *not* the test queries (``rerank.bank_sample``,
at most ``rerank.DEFAULT_BANK_SIZE`` = 5,000, ``--bank-size``):

- ``tuwen index``: 附件1's training pairs (``training_bank``, the draw ``tuwen export`` makes):
  their captions are the bank of the image candidates (text→image), their images the bank of the
  text candidates (image→text). They are encoded as the generation's sets ``bank_texts`` and
  ``bank_images`` (``BANK_SETS``) through the same runner and content-keyed vector cache as the
  other sets, so a rebuild of the same ingest encodes nothing again, and ``tuwen export`` reads
  them instead of encoding a bank of its own.
- ``tuwen corpus encode``: the corpus's own rows (``corpus_bank_rows``): a sample of its captions
  (set ``texts``) is the bank of its images, a sample of its images the bank of its captions. They
  are vectors the generation already holds: nothing is encoded for the bank.

What is stored, per searchable set, in ``<set>.qbnorm.npz`` (``SetBank``): the statistics
(``rerank.QueryBankStats``, one column per vector row of the set: ``log_norm`` and ``hubs``), which
set and rows of the generation are the bank, and each bank query's best score over the set
(``bank_top``). The statistics come from ``statistics``, the one code path ``tuwen export`` (also
for an ensemble) and the builds share.

**Items put after the generation (the delta of a collection).** The statistics have no column
for them; their column is computed when they arrive (``SetBank.columns``), from the bank vectors
the generation keeps: ``log_norm`` exactly as for a base item, ``hub`` when the item would be some
bank query's top-1 (its score reaches that query's ``bank_top``). The base's columns are not
revisited: a put item that becomes some bank query's new top-1 leaves the old one a hub, and a
deleted item leaves its mark on the others, until the next ``tuwen corpus encode`` recomputes
everything. The bank is fixed at encode time, as QB-Norm's bank is meant to be.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from common.files import atomic_path
from common.settings import Settings
from indexer import rerank, store

# per query set of the competition: the generation's set holding its bank
BANK_SETS = {store.TEXT_QUERIES: "bank_texts", store.IMAGE_QUERIES: "bank_images"}
# per candidate set of the competition: the generation's set holding the bank of its queries
BANK_OF_CANDIDATES = {store.IMAGE_CANDIDATES: "bank_texts", store.TEXT_CANDIDATES: "bank_images"}
SUFFIX = ".qbnorm.npz"


def bank_file(generation: Path, set_name: str) -> Path:
    return Path(generation) / f"{set_name}{SUFFIX}"


def training_bank(settings: Settings, *, size: int) -> list[tuple[str, str, str]]:
    """QB-Norm's bank of the competition: ``rerank.bank_sample`` of the store's training pairs
    ((image_id, caption, path), one caption per image, at most ``size``); [] without 附件1."""
    if size <= 0:
        return []
    with store.open_store(settings.store_url) as session:
        pairs = store.list_training_pairs(session)
    return [pairs[i] for i in rerank.bank_sample(pairs, size=size)]


def corpus_bank_rows(ids: Sequence[str], *, size: int) -> np.ndarray:
    """Rows of a corpus's set (its captions or its images) drawn as a bank: ``rerank.bank_sample``
    over the set's items, at most ``size``, in row order."""
    return np.asarray(rerank.bank_sample([(i, "", "") for i in ids], size=size), dtype=np.int64)


def similarity_blocks(banks: Sequence[np.ndarray], candidates: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
    """Bank × candidate similarities, ``rerank.CHUNK`` bank rows at a time, averaged over the
    models (one pair of ``banks[m]``, ``candidates[m]`` per member of an ensemble)."""
    for start in range(0, len(banks[0]), rerank.CHUNK):
        sims = [
            np.asarray(b[start : start + rerank.CHUNK], dtype=np.float32) @ np.asarray(c, dtype=np.float32).T
            for b, c in zip(banks, candidates, strict=True)
        ]
        yield sims[0] if len(sims) == 1 else np.mean(sims, axis=0)


def statistics(
    banks: Sequence[np.ndarray], candidates: Sequence[np.ndarray]
) -> tuple[rerank.QueryBankStats, np.ndarray]:
    """QB-Norm's statistics of a bank against candidates (averaged over an ensemble's models), and
    each bank query's best score (``bank_top``), in one pass over the similarities."""
    tops: list[np.ndarray] = []

    def recorded() -> Iterator[np.ndarray]:
        for block in similarity_blocks(banks, candidates):
            tops.append(np.asarray(block, dtype=np.float32).max(axis=1))
            yield block

    stats = rerank.bank_stats_of_blocks(recorded(), len(candidates[0]))
    return stats, np.concatenate(tops) if tops else np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class SetBank:
    """QB-Norm of one searchable set of a generation: its statistics (a column per vector row), the
    bank (rows ``bank_rows`` of the generation's set ``bank_set``) and each bank query's best score
    over the set, which decides whether a candidate added later is a hub (``columns``)."""

    stats: rerank.QueryBankStats
    bank_set: str
    bank_rows: np.ndarray  # int64 rows of bank_set
    bank_top: np.ndarray  # float32, one per bank query
    drawn: int  # the bank size asked for (``--bank-size``)

    @classmethod
    def compute(
        cls, bank_set: str, bank_rows: np.ndarray, bank: np.ndarray, candidates: np.ndarray, *, drawn: int
    ) -> SetBank:
        """The bank ``bank`` (rows ``bank_rows`` of ``bank_set``) against ``candidates``."""
        stats, top = statistics([bank], [candidates])
        return cls(stats, bank_set, np.asarray(bank_rows, dtype=np.int64), top, drawn)

    def save(self, path: Path) -> Path:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                log_norm=self.stats.log_norm,
                hubs=self.stats.hubs,
                beta=self.stats.beta,
                k=self.stats.k,
                bank_set=self.bank_set,
                bank_rows=self.bank_rows,
                bank_top=self.bank_top,
                drawn=self.drawn,
            )
        return path

    @classmethod
    def load(cls, path: Path) -> SetBank:
        with np.load(path) as data:
            stats = rerank.QueryBankStats(data["log_norm"], data["hubs"], float(data["beta"]), int(data["k"]))
            return cls(stats, str(data["bank_set"]), data["bank_rows"], data["bank_top"], int(data["drawn"]))

    def columns(self, bank: np.ndarray, vectors: np.ndarray) -> rerank.QueryBankStats:
        """Statistics columns of candidates the bank has not seen (items put after the generation),
        ``bank`` being this bank's vectors: ``log_norm`` as for a base item; a hub when the item
        reaches some bank query's best score over the base."""
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, bank.shape[1] if len(bank) else 0)
        if not len(vectors) or not len(bank):
            empty = np.zeros(len(vectors))
            return rerank.QueryBankStats(empty - np.inf, empty.astype(bool), self.stats.beta, self.stats.k)
        sims = np.asarray(bank, dtype=np.float32) @ vectors.T  # (n_bank, m)
        scaled = np.float32(self.stats.beta) * sims
        top = scaled.max(axis=0)
        log_norm = top.astype(np.float64) + np.log(np.exp(scaled - top).sum(axis=0, dtype=np.float64))
        hubs = (sims >= self.bank_top[:, None]).any(axis=0)
        return rerank.QueryBankStats(log_norm, hubs, self.stats.beta, self.stats.k)


def load_banks(generation: Path, set_names: Sequence[str]) -> dict[str, SetBank]:
    """The ``SetBank`` of each of ``set_names`` the generation has one for (none before issue 21)."""
    files = {n: bank_file(generation, n) for n in set_names}
    return {n: SetBank.load(path) for n, path in files.items() if path.is_file()}


class SetsWriter(Protocol):
    """What ``write_set_bank`` needs of a generation being written (``GenerationWriter``)."""

    counts: dict[str, int]

    def read_set(self, name: str) -> tuple[list[str], np.ndarray]: ...

    def file(self, name: str) -> Path: ...


def write_set_bank(
    writer: SetsWriter, candidate_set: str, bank_set: str, *, rows: np.ndarray | None, drawn: int
) -> SetBank | None:
    """Compute and store the ``SetBank`` of ``candidate_set`` in a generation being written: the
    bank is ``rows`` of its set ``bank_set`` (None: every row). None when either set is absent."""
    if candidate_set not in writer.counts or bank_set not in writer.counts:
        return None
    _ids, bank = writer.read_set(bank_set)
    rows = np.arange(len(bank), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    if not len(rows):
        return None
    _ids, candidates = writer.read_set(candidate_set)
    bank_vectors = np.asarray(bank[rows], dtype=np.float32)
    found = SetBank.compute(bank_set, rows, bank_vectors, candidates, drawn=drawn)
    found.save(writer.file(bank_file(Path(), candidate_set).name))
    return found
