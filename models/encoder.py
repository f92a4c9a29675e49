"""Batched, L2-normalised text and image embeddings from a loaded Chinese-CLIP model.

Where the time goes on a CPU, and what this file does about it (measured in
``bench/bench_encode.py``, numbers in ``bench/RESULTS.md``):

- the towers' matrix products: one backend of ``models.backends`` (PyTorch with bf16 autocast
  where the CPU has native bf16; ONNX Runtime; OpenVINO, fp32/bf16/int8), chosen by
  ``common.backend``; everything below is shared by all of them;
- texts: sorted by length and batched with the padding columns trimmed to the longest text of
  the batch (padding is masked out, so the result is the same as at 52 tokens, for a fraction of
  the work: Chinese captions are mostly 10-30 tokens);
- images: JPEG decode (at a reduced DCT scale when the file is much larger than the input) and
  resize run in DataLoader worker processes, overlapped with the model's forward pass, at most
  4 batches ahead (a bounded queue), while the towers use every core; on 2 cores or fewer they
  run in this process (``common.runtime.decode_workers``);
- a bulk job's batches run as several single-threaded passes at once (``streams``, from
  ``common.runtime.encode_streams``), each pass decoding its own part of the batch in its thread
  when no worker does, so one pass decodes while the others compute.

No PyTorch here: texts and single images (a server's queries) are numpy end to end, and only
decoding files in worker processes imports PyTorch's DataLoader, with the ``torch`` backend or a
conversion the only other users (``models.backends``).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from common.runtime import available_cores, decode_workers, encode_streams
from common.settings import Settings
from models.backends import Calibration, Towers, open_towers
from models.factory import LoadedModel, create_model_and_transforms
from models.imageio import ImageDecodeError, open_image
from models.tokens import token_lengths, tokenize_texts

TEXT_BATCH = 64
IMAGE_BATCH = 16  # on CPU larger batches are no faster per image, and the first batch waits longer
# A pass's activations grow with its images, and past what glibc keeps they are mapped from the
# kernel and handed back at every allocation: ``tuwen index``'s 64-image batches as passes of 32
# ViT-B-16 images spent a sixth of their CPU time faulting pages in (10.7 million faults for 256
# photos). One pass on 2 threads of an AMX Xeon, 64 images: as passes of 8, 1.34x (fp32) and 1.55x
# (bf16) faster than whole, and no fault at all; passes of 16 were slower in both
# (bench/bench_pass_size.py, bench/RESULTS.md issue 22).
PASS_IMAGES = 8


class ImageFiles:
    """Image files to model pixels, one per item: reduced-size JPEG decoding, then ``preprocess``.

    A map-style dataset (``__len__``, ``__getitem__``) for DataLoader workers (here) or Ray tasks
    (``indexer.encode.ray_runner``); a bad file yields zero pixels and its error instead of
    raising, so one file never stops a batch.
    """

    def __init__(self, paths: Sequence[str | Path], preprocess, resolution: int):
        self.paths, self.preprocess, self.resolution = list(paths), preprocess, resolution

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            img = open_image(self.paths[i], draft_size=(self.resolution, self.resolution))
            return self.preprocess(img), ""
        except ImageDecodeError as exc:
            return np.zeros((3, self.resolution, self.resolution), np.float32), str(exc) or "unreadable"

    def batch(self, start: int, stop: int) -> tuple[np.ndarray, list[str]]:
        """Items ``start:stop`` decoded here: stacked pixels, and per item its error ("" when fine)."""
        items = [self[i] for i in range(start, min(stop, len(self)))]
        return np.stack([pixels for pixels, _ in items]), [error for _, error in items]


class Encoder:
    """Batched, normalised embeddings; the towers underneath are one backend's (``models.backends``).

    ``backend="torch"`` here (the model as loaded); ``open_encoder`` applies the settings' choice.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        precision: str = "auto",
        backend: str | None = "torch",
        cache_dir: Path | None = None,
        calibration: Calibration | None = None,
        threads: int | None = None,
        echo: Callable[[str], None] | None = None,
        release_torch: bool = False,
        job_images: int | None = None,
        streams: int = 1,
    ):
        self.loaded = loaded
        self.device = loaded.device  # "cpu", "cuda"...
        self.towers: Towers = open_towers(
            loaded,
            backend=backend,
            precision=precision,
            cache_dir=cache_dir,
            calibration=calibration,
            threads=threads,
            echo=echo,
            job_images=job_images,
            streams=streams,
        )
        self.backend = self.towers.backend
        if release_torch and self.backend != "torch":
            # The exported towers hold their own weights: drop this encoder's hold on the PyTorch
            # copy (a ViT-B-16 is 750 MB in fp32) so a long-running service does not keep both.
            self.loaded = loaded.without_model()
        self.precision = self.towers.image_precision
        self.text_precision = self.towers.text_precision

    @property
    def model_id(self) -> str:
        return self.loaded.model_id

    @property
    def model(self):
        return self.loaded.model

    def describe(self) -> str:
        """One line for logs: backend and precisions."""
        return f"backend {self.backend}, precision {self.precision} (texts {self.text_precision})"

    @staticmethod
    def _finish(features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float32)
        return features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-12)

    def encode_pixels(self, pixels) -> np.ndarray:
        """L2-normalised embeddings of preprocessed pixels (N, 3, R, R): the image tower alone."""
        return self._finish(self.towers.encode_image(pixels))

    def encode_texts(
        self, texts: Sequence[str], *, batch_size: int = TEXT_BATCH, progress: bool = False
    ) -> np.ndarray:
        out = np.zeros((len(texts), self.loaded.embed_dim), dtype=np.float32)
        if not len(texts):
            return out
        tokens = tokenize_texts(texts)
        lengths = token_lengths(tokens)
        # Longest first: each batch holds texts of similar length, and memory peaks at the start.
        order = np.argsort(-lengths, kind="stable")
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="texts", unit="batch", disable=not progress):
            rows = order[start : start + batch_size]
            width = max(int(lengths[rows].max()), 1)
            out[rows] = self._finish(self.towers.encode_text(np.ascontiguousarray(tokens[rows, :width])))
        return out

    def encode_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_pixels(np.stack([self.loaded.preprocess(img) for img in images]))

    def encode_image_files(
        self,
        paths: Sequence[str | Path],
        *,
        batch_size: int = IMAGE_BATCH,
        workers: int | None = None,
        progress: bool = False,
    ) -> tuple[np.ndarray, list[str]]:
        """Embeddings of the files in order, and per file an error message ("" when fine).

        A file that cannot be decoded gets a zero row; callers decide the fallback.
        ``workers=0`` decodes in this process (no overlap); ``None`` picks from the core count.
        """
        workers = decode_workers(workers)
        dataset = ImageFiles(paths, self.loaded.preprocess, self.loaded.arch.resolution)
        out = np.zeros((len(dataset), self.loaded.embed_dim), dtype=np.float32)
        errors = [""] * len(dataset)
        with (
            tqdm(total=len(dataset), desc="images", unit="img", disable=not progress) as bar,
            self.towers.streaming(),
        ):
            for start, vectors, batch_errors in self._encoded(dataset, batch_size, workers):
                stop = start + len(vectors)
                out[start:stop], errors[start:stop] = vectors, batch_errors
                bar.update(len(vectors))
        for i, err in enumerate(errors):
            if err:
                out[i] = 0.0
        return out, errors

    def _encoded(
        self, dataset: ImageFiles, batch_size: int, workers: int
    ) -> Iterator[tuple[int, np.ndarray, list[str]]]:
        """(first row, vectors, errors) of each batch, in order."""
        streams = self.towers.streams
        if workers:
            batches: Iterable = _worker_batches(
                dataset, batch_size, workers, pin=self.loaded.device_type == "cuda"
            )
        elif streams > 1:
            # Each pass decodes its part of the files and encodes it, in its own thread.
            part = _pass_images(batch_size, streams)
            yield from _in_order(
                lambda start: (start, *self._decoded_and_encoded(dataset, start, start + part)),
                range(0, len(dataset), part),
                streams,
            )
            return
        else:
            batches = _batches(dataset, batch_size)
        start = 0
        with ThreadPoolExecutor(streams) if streams > 1 else contextlib.nullcontext() as pool:
            for pixels, batch_errors in batches:
                yield start, self._encode_parts(pixels, streams, pool), list(batch_errors)
                start += len(pixels)

    def _decoded_and_encoded(
        self, dataset: ImageFiles, start: int, stop: int
    ) -> tuple[np.ndarray, list[str]]:
        pixels, errors = dataset.batch(start, stop)
        return self.encode_pixels(pixels), errors

    def _encode_parts(self, pixels, streams: int, pool: ThreadPoolExecutor | None) -> np.ndarray:
        """One decoded batch as passes of ``_pass_images``: on ``streams`` threads at once, or
        without a pool one after another; on a GPU the batch goes whole (larger is faster there)."""
        if len(pixels) < 2 or (pool is None and self.loaded.device_type != "cpu"):
            return self.encode_pixels(pixels)
        part = _pass_images(len(pixels), streams)
        parts = [pixels[a : a + part] for a in range(0, len(pixels), part)]
        return np.concatenate(
            list(pool.map(self.encode_pixels, parts) if pool else map(self.encode_pixels, parts))
        )


def _pass_images(batch_size: int, streams: int) -> int:
    """Images per forward pass on a CPU: the batch shared out among ``streams`` passes, at most
    ``PASS_IMAGES`` each, the same for one pass alone."""
    return max(1, min(batch_size // streams, PASS_IMAGES))


def _in_order(job: Callable[[int], tuple], starts: Iterable[int], streams: int) -> Iterator[tuple]:
    """``job(start)`` for each start on ``streams`` threads, at most two per thread queued, results
    in order (a bounded window: memory stays flat however many files there are)."""
    with ThreadPoolExecutor(streams) as pool:
        pending: deque[Future] = deque()
        for start in starts:
            pending.append(pool.submit(job, start))
            if len(pending) >= 2 * streams:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _batches(dataset: ImageFiles, batch_size: int) -> Iterator[tuple[np.ndarray, list[str]]]:
    """Decoded in this process (a server's single uploads, tests): no worker, no PyTorch."""
    for start in range(0, len(dataset), batch_size):
        yield dataset.batch(start, start + batch_size)


def _worker_batches(dataset: ImageFiles, batch_size: int, workers: int, *, pin: bool) -> Iterable:
    """Decoded in ``workers`` DataLoader processes, at most 4 batches ahead of the model."""
    from torch.utils.data import DataLoader  # PyTorch's worker pool: only when files decode in workers

    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=4,
        pin_memory=pin,
    )


def open_encoder(
    model: str | LoadedModel,
    *,
    settings: Settings | None = None,
    device: str | None = None,
    weights_dir: str | Path | None = None,
    precision: str | None = None,
    backend: str | None = None,
    cache_dir: str | Path | None = None,
    calibration: Calibration | None = None,
    threads: int | None = None,
    echo: Callable[[str], None] | None = None,
    release_torch: bool = False,
    job_images: int | None = None,
    bulk: bool = False,
) -> Encoder:
    """The one way to get an encoder: ``model`` (a spec, or a model already loaded) on ``backend``
    at ``precision``.

    Each of ``device``, ``weights_dir``, ``precision``, ``backend`` and ``cache_dir`` is the argument
    when given, else the settings' value (``TUWEN_DEVICE``, ``$TUWEN_HOME/weights``,
    ``TUWEN_PRECISION``, ``TUWEN_BACKEND``, ``$TUWEN_HOME/converted``), else without settings the
    ``Encoder``'s own default (the model as loaded: torch at auto precision, nothing cached).
    ``release_torch``: drop the PyTorch weights once an exported backend holds its own (a server).
    ``job_images``: the images a job will encode; under ``auto`` a small first job skips the
    conversion (``models.backends.CONVERT_FROM_IMAGES``). ``bulk``: a job that encodes many files
    (an index), run as several passes at once (``common.runtime.encode_streams``); a server's
    single queries keep one pass on every core.
    """
    if isinstance(model, LoadedModel):
        loaded = model
    else:
        loaded = create_model_and_transforms(
            model,
            device=device or (settings.device if settings else None),
            weights_dir=weights_dir or (settings.weights_dir if settings else None),
            lazy=True,  # built when a backend needs it: cached exported towers never do
        )
    if cache_dir is None and settings is not None:
        cache_dir = settings.converted_dir
    return Encoder(
        loaded,
        precision=precision or (settings.precision if settings else "auto"),
        backend=backend or (settings.backend if settings else "torch"),
        cache_dir=None if cache_dir is None else Path(cache_dir),
        calibration=calibration,
        threads=threads,
        echo=echo,
        release_torch=release_torch,
        job_images=job_images,
        streams=encode_streams(threads or available_cores(), device_type=loaded.device_type) if bulk else 1,
    )
