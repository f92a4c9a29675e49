"""One entry point from a model spec to a ready model, its image transform and its identity.

This module imports no PyTorch: a model's identity, architecture and transform are known without
it, and ``models.torch_model`` (PyTorch, cn_clip's model code) is imported when a model is built.
A server whose exported towers are cached builds none, and so never holds PyTorch's 840 MB.

Specs (weight sources are kept apart from architectures, as open_clip does):
- ``ViT-B-16`` etc.: official Chinese-CLIP weights, found in (or downloaded into) ``weights_dir``;
- a path to a checkpoint in cn_clip's format (``{"state_dict": ...}``, ``module.`` prefix or not);
- ``tiny``: a small architecture built with cn_clip's ``CLIP`` class and its real vocabulary;
- ``random:ARCH``: any registered architecture with random weights (benchmarks).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from common.errors import TuwenError
from common.hardware import cuda_available
from common.runs import read_run_config
from common.settings import get_settings
from models.preprocess import image_transform
from models.registry import ARCHS, HF_ORG, OFFICIAL_NAMES, RANDOM_SEED, ArchSpec, arch_by_struct

log = logging.getLogger(__name__)


class LoadedModel:
    """A model's identity (``spec``, ``model_id``, ``arch``, ``device``), its image transform and its
    PyTorch weights (``model``).

    With ``build`` (``create_model_and_transforms(..., lazy=True)``) the PyTorch model is built on
    first use of ``model``: a server whose exported towers are already cached never builds it, so its
    memory never holds the PyTorch copy beside the exported one.
    """

    def __init__(
        self,
        model: Any,
        preprocess: Callable,
        arch: ArchSpec,
        spec: str,
        model_id: str,  # identifies the weights: indexes built by one model refuse queries from another
        device: str,  # "cpu", "cuda", "cuda:1" (``default_device``)
        *,
        build: Callable[[], Any] | None = None,
    ):
        self._model, self._build = model, build
        self.preprocess, self.arch, self.spec = preprocess, arch, spec
        self.model_id, self.device = model_id, device

    @property
    def model(self):  # cn_clip's CLIP (a torch.nn.Module), or None
        """The PyTorch model (built now if it was deferred); None once released."""
        if self._model is None and self._build is not None:
            self._model, self._build = self._build(), None
        return self._model

    @property
    def built(self) -> bool:
        return self._model is not None

    def without_model(self) -> LoadedModel:
        """The same identity without the PyTorch weights (released, and never built again)."""
        return LoadedModel(None, self.preprocess, self.arch, self.spec, self.model_id, self.device)

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]

    @property
    def embed_dim(self) -> int:
        return int(self.arch.config()["embed_dim"])


_DEVICE = re.compile(r"(cpu|cuda(:\d+)?|mps)")


def default_device(device: str | None = None) -> str:
    """``device`` checked (``cpu``, ``cuda``, ``cuda:N``, ``mps``), else CUDA when PyTorch sees a GPU."""
    if device:
        if not _DEVICE.fullmatch(str(device)):
            raise TuwenError(
                f"device must be cpu, cuda, cuda:N or mps (TUWEN_DEVICE / --device), not {device!r}"
            )
        return str(device)
    return "cuda" if cuda_available() else "cpu"


def _torch_model() -> ModuleType:
    # The one deferred import of PyTorch on the model path: it comes with the first model built,
    # not with this module, so a process on cached exported towers never loads it (see above).
    from models import torch_model

    return torch_model


def create_model_and_transforms(
    spec: str, *, device: str | None = None, weights_dir: str | Path | None = None, lazy: bool = False
) -> LoadedModel:
    """Resolve ``spec`` to a model in eval mode on ``device`` (CUDA when available).

    ``lazy``: build the PyTorch model (and read a checkpoint's weights) on first use of ``.model``,
    when the architecture is known without them (a registered name, ``tiny``, ``random:ARCH``, or a
    checkpoint whose run's config.json names it); the identity is computed now either way.
    """
    target = default_device(device)
    spec = spec.strip()
    if spec.startswith("random:") or spec == "tiny":
        arch = _arch_or_error(spec.removeprefix("random:"))
        model_id = f"{spec}@seed{RANDOM_SEED}"
        return _loaded(lambda: _torch_model().build_model(arch), arch, spec, model_id, target, lazy=lazy)
    if spec in ARCHS and spec in OFFICIAL_NAMES:
        path, known = official_weights(ARCHS[spec], weights_dir=weights_dir), ARCHS[spec]
    elif Path(spec).expanduser().is_file():
        path = Path(spec).expanduser().resolve()
        known = _named_arch(path) if lazy else None  # an eager load reads it in checkpoint_arch
    else:
        raise TuwenError(
            f"unknown model {spec!r}: use one of {', '.join(OFFICIAL_NAMES)}, tiny, "
            f"random:ARCH, or the path of a checkpoint file"
        )
    model_id_of = lambda arch: f"{arch.name}:{file_sha256(path)[:16]}"  # noqa: E731
    if lazy and known is not None:
        deferred = lambda: _torch_model().checkpoint_model(path, known)  # noqa: E731
        return _loaded(deferred, known, spec, model_id_of(known), target, lazy=True)
    torch_model = _torch_model()
    checkpoint = torch_model.load_checkpoint(path)
    state_dict = torch_model.checkpoint_state_dict(checkpoint)
    arch = checkpoint_arch(checkpoint, state_dict, path)
    model = torch_model.model_with_weights(arch, state_dict, path)
    return _loaded(lambda: model, arch, spec, model_id_of(arch), target, lazy=False)


def _loaded(
    build: Callable[[], Any], arch: ArchSpec, spec: str, model_id: str, device: str, *, lazy: bool
) -> LoadedModel:
    ready = lambda: build().to(device).eval()  # noqa: E731
    if lazy:
        return LoadedModel(None, image_transform(arch.resolution), arch, spec, model_id, device, build=ready)
    return LoadedModel(ready(), image_transform(arch.resolution), arch, spec, model_id, device)


def _named_arch(path: Path) -> ArchSpec | None:
    """The architecture the checkpoint's run config.json names (None without one)."""
    return _arch_named(_run_config_arch(path))


def _arch_named(name: str | None) -> ArchSpec | None:
    """A registered architecture by its name or its structure name (None for None or unknown)."""
    return (ARCHS.get(name) or arch_by_struct(name)) if name else None


def _arch_or_error(name: str) -> ArchSpec:
    if name not in ARCHS:
        raise TuwenError(f"unknown architecture {name!r}; known: {', '.join(ARCHS)}")
    return ARCHS[name]


def official_weights(arch: ArchSpec, *, weights_dir: str | Path | None) -> Path:
    """The official checkpoint in ``weights_dir``, downloaded there first if online.

    The default folder is the settings' (``$TUWEN_HOME/weights``), the one every command uses.
    """
    folder = Path(weights_dir).expanduser() if weights_dir else get_settings().weights_dir
    target = folder / arch.weights_file
    if target.is_file():
        return target
    if os.environ.get("HF_HUB_OFFLINE") not in {"1", "true", "TRUE"}:
        try:
            from huggingface_hub import hf_hub_download  # only to download missing weights

            folder.mkdir(parents=True, exist_ok=True)
            log.info("downloading %s/%s into %s", HF_ORG, arch.hf_repo, folder)
            return Path(
                hf_hub_download(
                    f"{HF_ORG}/{arch.hf_repo}", filename=arch.weights_file, local_dir=folder, etag_timeout=10
                )
            )
        except Exception as exc:  # any network or hub failure means: tell the user what to do
            reason = f" ({type(exc).__name__})"
    else:
        reason = " (HF_HUB_OFFLINE is set)"
    raise TuwenError(
        f"the weights of {arch.name} are not in {folder} and could not be downloaded{reason}. "
        f"Put {arch.weights_file} there (it is on the Hugging Face hub as "
        f"{HF_ORG}/{arch.hf_repo}), or pass the checkpoint's path as the model."
    )


def checkpoint_arch(checkpoint: dict, state_dict: dict, path: Path) -> ArchSpec:
    """The architecture named in the checkpoint or its run's config.json, else read off shapes."""
    arch = _arch_named(checkpoint.get("model_arch")) or _named_arch(path) or infer_arch(state_dict)
    if arch is None:
        raise TuwenError(f"{path}: the weights match none of the known architectures ({', '.join(ARCHS)})")
    return arch


def _run_config_arch(path: Path) -> str | None:
    try:
        return read_run_config(path).get("arch")
    except TuwenError:  # a broken config.json: the weights' shapes still tell the architecture
        return None


def _count_blocks(state_dict: dict, pattern: str) -> int:
    found = {int(m.group(1)) for k in state_dict if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def infer_arch(state_dict: dict) -> ArchSpec | None:
    """Match tower widths, depths and input size of the weights against every registered config."""
    text_width = state_dict["bert.embeddings.word_embeddings.weight"].shape[1]
    text_layers = _count_blocks(state_dict, r"bert\.encoder\.layer\.(\d+)\.")
    is_resnet = "visual.conv1.weight" in state_dict and "visual.layer1.0.conv1.weight" in state_dict
    for arch in ARCHS.values():
        cfg = arch.config()
        if cfg["text_hidden_size"] != text_width or cfg["text_num_hidden_layers"] != text_layers:
            continue
        if isinstance(cfg["vision_layers"], list):
            if is_resnet:
                return arch
            continue
        if is_resnet:
            continue
        width, _, patch, _ = state_dict["visual.conv1.weight"].shape
        tokens = state_dict["visual.positional_embedding"].shape[0]
        resolution = int(round((tokens - 1) ** 0.5)) * patch
        layers = _count_blocks(state_dict, r"visual\.transformer\.resblocks\.(\d+)\.")
        if (cfg["vision_width"], cfg["vision_patch_size"], cfg["image_resolution"], cfg["vision_layers"]) == (
            width,
            patch,
            resolution,
            layers,
        ):
            return arch
    return None


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
