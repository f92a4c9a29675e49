"""Training pairs from the store, the split held out by image, and the loaders that feed the loop.

Pairs come from ``indexer.store.list_training_pairs`` (joined by ``image_id`` from the CSV, never by
directory order). Batches are drawn from a per-epoch permutation that depends only on the seed and
the epoch, so a run resumed mid-epoch sees exactly the batches it would have seen.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from common.errors import TuwenError
from common.settings import Settings
from indexer import store
from models.imageio import ImageDecodeError, open_image
from models.tokens import tokenize_texts

SPLITS = ("val", "train", "all")


@dataclass(frozen=True)
class Pair:
    index: int  # position among the store's readable pairs (CSV order): the integer text id in eval files
    image_id: str
    caption: str
    path: str


def load_pairs(settings: Settings) -> list[Pair]:
    engine = store.make_engine(settings.store_url)
    try:
        with store.transaction(engine) as session:
            rows = store.list_training_pairs(session)
    finally:
        engine.dispose()
    if not rows:
        raise TuwenError(
            f"no readable training pairs in the store at {settings.store_url}: "
            "run `tuwen ingest --root DIR` on a folder with 附件1 first"
        )
    return [Pair(i, image_id, caption, path) for i, (image_id, caption, path) in enumerate(rows)]


def pairs_fingerprint(pairs: Sequence[Pair]) -> str:
    """Identifies the pair list, so evaluation can tell when the store changed since training."""
    digest = hashlib.sha256()
    for p in pairs:
        digest.update(f"{p.image_id}\t{p.caption}\n".encode())
    return digest.hexdigest()[:16]


def split_by_image(pairs: Sequence[Pair], *, val_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, val): a seeded share of the distinct images goes to val with all of its captions."""
    if not 0.0 <= val_fraction < 1.0:
        raise TuwenError(f"--val-fraction must be in [0, 1), not {val_fraction}")
    images = list(dict.fromkeys(p.image_id for p in pairs))
    n_val = round(val_fraction * len(images))
    if val_fraction > 0 and len(images) >= 2:
        n_val = min(max(n_val, 1), len(images) - 1)  # both sides non-empty
    shuffled = sorted(images)
    random.Random(seed).shuffle(shuffled)
    val_images = set(shuffled[:n_val])
    train = [p for p in pairs if p.image_id not in val_images]
    val = [p for p in pairs if p.image_id in val_images]
    return train, val


def select_split(pairs: Sequence[Pair], *, split: str, val_fraction: float, seed: int) -> list[Pair]:
    if split not in SPLITS:
        raise TuwenError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if split == "all":
        return list(pairs)
    train, val = split_by_image(pairs, val_fraction=val_fraction, seed=seed)
    return val if split == "val" else train


def train_transform(resolution: int) -> Callable:
    """cn_clip's training augmentation (timm RandomResizedCrop 0.9-1 + AutoAugment 'original')."""
    # imported here: timm takes seconds to import and only --augment needs it
    from cn_clip.clip.utils import _convert_to_rgb
    from timm.data import create_transform
    from torchvision.transforms import Compose

    transform = create_transform(
        input_size=resolution,
        scale=(0.9, 1.0),
        is_training=True,
        color_jitter=None,
        auto_augment="original",
        interpolation="bicubic",
        mean=(0.48145466, 0.4578275, 0.40821073),
        std=(0.26862954, 0.26130258, 0.27577711),
    )
    return Compose(transform.transforms[:-3] + [_convert_to_rgb] + transform.transforms[-3:])


class PairDataset(Dataset):
    """(pixels, tokens) per pair, decoded in DataLoader workers with the guarded decoder.

    With augmentation each item draws from a generator seeded by (seed, epoch, index), so the
    pixels do not depend on which worker served the item: resuming stays exact.
    """

    def __init__(self, pairs: Sequence[Pair], *, transform: Callable, resolution: int, augment_seed=None):
        self.pairs, self.transform, self.resolution = list(pairs), transform, resolution
        self.augment_seed = augment_seed  # (seed, epoch) when augmenting, else None

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        pair = self.pairs[i]
        tokens = torch.from_numpy(tokenize_texts([pair.caption])[0])
        try:
            image = open_image(pair.path, draft_size=(self.resolution, self.resolution))
        except ImageDecodeError:
            # readable at ingest, gone since: a blank picture costs one noisy negative, not the run
            return torch.zeros(3, self.resolution, self.resolution), tokens
        if self.augment_seed is None:
            return torch.as_tensor(self.transform(image)), tokens  # the model's numpy transform
        seed, epoch = self.augment_seed
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            random.seed(f"{seed}/{epoch}/{i}")
            torch.manual_seed(hash((seed, epoch, i)) & 0x7FFFFFFF)
            pixels = self.transform(image)
        random.setstate(state)
        return pixels, tokens


class StepBatches(Sampler[list[int]]):
    """Micro-batches of an epoch, from optimizer step ``start_step`` on."""

    def __init__(self, steps: list[list[list[int]]], start_step: int = 0):
        self.micro = [mb for step in steps[start_step:] for mb in step]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.micro)

    def __len__(self) -> int:
        return len(self.micro)


def epoch_plan(n: int, *, batch_size: int, accum_freq: int, seed: int, epoch: int) -> list[list[list[int]]]:
    """Per optimizer step, its ``accum_freq`` micro-batches of indices; the incomplete tail is dropped
    as cn_clip drops it (unless the whole set is smaller than one step)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    total = batch_size * accum_freq
    n_steps = max(1, n // total)
    steps = []
    for s in range(n_steps):
        chunk = order[s * total : (s + 1) * total]
        micro = [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
        steps.append([m for m in micro if m])
    return steps


def steps_per_epoch(n: int, *, batch_size: int, accum_freq: int) -> int:
    return max(1, n // (batch_size * accum_freq))


def make_loader(
    dataset: PairDataset, sampler: StepBatches, *, workers: int, pin_memory: bool, seed: int
) -> DataLoader:
    # its own generator: starting a loader must not draw from the global RNG (dropout masks)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
    )
