"""Ray runner: the encode stage on a Ray cluster, plugged into the seam of ``indexer.encode.runner``.

``RayRunner(address)`` is a ``Runner``: ``index_corpus(..., runner=RayRunner("auto"))`` reads the
sets, builds the mapper and writes the generation exactly as the local runner does; only the
encoding goes to the cluster, with Ray Data:

    rows (set, row, source) ─▶ decode + preprocess images: CPU tasks (``map_batches`` of a function)
                            ─▶ encode: a pool of actors, each building the mapper's model once
                               (``map_batches`` of a class, ``concurrency=actors``, one GPU each
                               when the cluster has GPUs)
                            ─▶ the driver puts each vector back at its row, then ``write_encoded``

Image files are opened by the workers, so their paths must be the same on every node (a shared
mount); captions travel in the rows. The workers run the driver's own copy of ``common``,
``models`` and ``indexer`` (shipped as ``py_modules`` when this runner connects), but torch,
cn_clip, faiss and Ray must be installed on every node (``pip install 'tuwen[ray]'``), and
official weights must be in the same ``$TUWEN_HOME/weights`` path on every node.

A worker that dies is restarted by Ray and its batch retried (``max_restarts``,
``max_task_retries``); a run that fails or is interrupted raises before ``publish``, so the
previous live generation stays as it was.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import common
import indexer
import models
from common.errors import TuwenError
from indexer.encode.mapper import EncodeMapper
from indexer.encode.reader import EncodeSet, Kind, Say
from indexer.encode.runner import Runner, run_local, write_encoded
from indexer.encode.writer import GenerationWriter
from models.encoder import ImageFiles  # decode_images: the local path's per-file step, reused as is

log = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 5.0
DECODE_CPUS = 0.5
RAY_MISSING = "--ray needs Ray Data: pip install 'tuwen[ray]' (ray[data])"


def runner_for(address: str | None) -> Runner:
    """The runner a ``--ray`` option asks for: the local runner when it is not given."""
    return RayRunner(address) if address else run_local


@dataclass(frozen=True)
class RayRunner:
    """Encode on the Ray cluster at ``address`` (``auto``, ``host:6379`` or ``ray://host:10001``).

    ``actors``: encoding actors (default: one per GPU, or CPUs - 1 on a CPU-only cluster).
    """

    address: str = "auto"
    actors: int | None = None

    def __post_init__(self) -> None:
        if importlib.util.find_spec("ray") is None:
            raise TuwenError(RAY_MISSING)
        if self.address != "auto":
            check_reachable(self.address)  # fail before the model is loaded, not after

    def __call__(
        self, sets: Sequence[EncodeSet], mapper: EncodeMapper, writer: GenerationWriter, say: Say = log.info
    ) -> None:
        started = connect(self.address)
        try:
            pool = actor_pool(mapper, self.actors)
            say(f"ray: {describe_cluster()}; {pool['concurrency']} encoding actor(s) of {pool['resources']}")
            encoded: dict[str, tuple[np.ndarray, list[str]]] = {}
            for kind in ("image", "text"):  # one actor pool per kind: each loads the model once
                chosen = [s for s in sets if s.kind == kind]
                if chosen:
                    results = encode_sets(chosen, kind=kind, mapper=mapper, pool=pool)
                    encoded.update(zip([s.name for s in chosen], results, strict=True))
            for s in sets:  # written in the reader's order, as the local runner writes them
                write_encoded(s, *encoded[s.name], writer, say)
        finally:
            if started:
                import ray  # optional (tuwen[ray]); only when --ray is given

                ray.shutdown()


def connect(address: str) -> bool:
    """Connect this process to the cluster (unless already connected); True if this call did."""
    use_token_if_any()  # before `import ray`, which reads its auth mode once
    try:
        import ray  # optional, and after use_token_if_any: ray reads its auth mode on import
    except ImportError as exc:
        raise TuwenError(RAY_MISSING) from exc
    if ray.is_initialized():
        return False
    if address != "auto":
        check_reachable(address)
    try:  # the workers run this very code, whatever version a node has installed
        ray.init(
            address=address,
            runtime_env={"py_modules": [common, models, indexer]},
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    except ConnectionError as exc:
        where = (
            "no running Ray cluster found (start one with `ray start --head`)" if address == "auto" else exc
        )
        raise TuwenError(f"--ray {address}: {where}") from exc
    return True


def use_token_if_any() -> None:
    """Ray 2.59+ clusters check a token, which a driver sends only in token mode: with a token at
    hand (``ray get-auth-token``) and no mode chosen, use it; a cluster without auth accepts it."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    default = Path.home() / ".ray" / "auth_token"
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or default.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


def check_reachable(address: str) -> None:
    """A quick, clear error for an address nobody answers at (ray.init would wait a long time)."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise TuwenError(f"--ray {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise TuwenError(
            f"--ray {address}: cannot reach {host}:{port} ({exc}); is the Ray head running?"
        ) from exc


def describe_cluster() -> str:
    import ray  # optional (tuwen[ray]), as in every function below

    res = ray.cluster_resources()
    return f"{len(ray.nodes())} node(s), {res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU"


def actor_pool(mapper: EncodeMapper, actors: int | None) -> dict[str, Any]:
    """``map_batches`` arguments of the encoding actors: one GPU each when there are GPUs."""
    import ray

    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0)) if mapper.kwargs.get("device") in (None, "cuda") else 0
    if gpus:
        resources = {"num_gpus": 1}
        default = gpus
    else:  # leave a CPU to the decoding tasks
        resources = {"num_cpus": 1}
        default = max(1, int(res.get("CPU", 1)) - 1)
    return {"concurrency": actors or default, "resources": resources}


def encode_sets(
    sets: Sequence[EncodeSet], *, kind: Kind, mapper: EncodeMapper, pool: dict[str, Any]
) -> list[tuple[np.ndarray, list[str]]]:
    """(vectors, errors) of each set, in row order, encoded by one Ray Data pipeline."""
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False  # the driver shows one bar
    batch = int(mapper.kwargs["batch_size"])
    items = [
        {"set": j, "row": i, "source": r.source} for j, s in enumerate(sets) for i, r in enumerate(s.rows)
    ]
    ds = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // batch)))
    if kind == "image":
        loaded = mapper.encoder.loaded
        ds = ds.map_batches(
            decode_images,
            fn_kwargs={"preprocess": loaded.preprocess, "resolution": loaded.arch.resolution},
            batch_size=batch,
            # half a CPU each: decoding waits on file reads, and resources unlike the actors' keep
            # Ray Data from fusing these tasks into the actors (decoding would then stall encoding)
            num_cpus=DECODE_CPUS,
        )
    ds = ds.map_batches(
        EncodeActor,
        fn_constructor_kwargs={"mapper_class": type(mapper), "kwargs": {**mapper.kwargs, "progress": False}},
        batch_size=batch,
        # Ray Data restarts a dead actor and retries its batch by default (max_restarts=-1,
        # max_task_retries=-1 on its actor pools): what tests/test_ray_index.py relies on
        compute=ray.data.ActorPoolStrategy(size=pool["concurrency"]),
        **pool["resources"],
    )
    dim = mapper.encoder.loaded.embed_dim
    out = [(np.zeros((len(s.rows), dim), np.float32), [""] * len(s.rows)) for s in sets]
    seen = [np.zeros(len(s.rows), bool) for s in sets]
    with tqdm(total=len(items), desc=f"{kind}s (ray)", unit=kind[:3], disable=not mapper.progress) as bar:
        for part in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for j, i, vector, error in zip(
                part["set"], part["row"], part["vector"], part["error"], strict=True
            ):
                out[j][0][i], out[j][1][i], seen[j][i] = vector, str(error), True
            bar.update(len(part["row"]))
    missing = sum(int((~s).sum()) for s in seen)
    if missing:
        raise RuntimeError(f"ray: {missing} row(s) never came back from the encoding actors")
    return out


def decode_images(batch: dict[str, np.ndarray], *, preprocess, resolution: int) -> dict[str, np.ndarray]:
    """CPU task: decode and preprocess image files exactly as the local encoder's loader does."""
    files = ImageFiles(list(batch["source"]), preprocess, resolution)
    pixels, errors = files.batch(0, len(files))
    errors = np.array(errors, dtype=object)
    return {"set": batch["set"], "row": batch["row"], "pixels": pixels, "error": errors}


class EncodeActor:
    """One per actor slot: builds the mapper (and its model) once, then encodes batch after batch."""

    def __init__(self, *, mapper_class: type[EncodeMapper], kwargs: dict[str, Any]):
        self.mapper = mapper_class(**kwargs)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "pixels" in batch:  # decoded upstream: only the image tower runs here
            errors = np.asarray(batch["error"], dtype=object)
            vectors = self.mapper.encoder.encode_pixels(batch["pixels"])
            vectors[errors != ""] = 0.0  # as the local encoder leaves a failed file
        else:
            vectors, error_list = self.mapper.encode_sources("text", list(batch["source"]))
            errors = np.array(error_list, dtype=object)
        return {"set": batch["set"], "row": batch["row"], "vector": vectors, "error": errors}
