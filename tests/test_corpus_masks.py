"""The mask modality of a corpus: the ``mask`` column, the ``masks`` set of ``corpus encode``, and
``tuwen corpus masks`` (GrabCut)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import TuwenError
from indexer import corpus
from indexer.corpus import add as corpus_add
from indexer.corpus.masks import BACKGROUND, MASKED_FOLDER, decode_mask, grabcut_mask
from tuwen.cli import main


@pytest.fixture(scope="module")
def tiny_mapper(one_thread):
    from indexer.encode.mapper import EncodeMapper

    return EncodeMapper("tiny", precision="fp32", workers=1)


def _mask(path: Path, size: tuple[int, int], box: tuple[int, int, int, int]) -> None:
    pixels = np.zeros((size[1], size[0]), np.uint8)
    x0, y0, x1, y1 = box
    pixels[y0:y1, x0:x1] = 255
    Image.fromarray(pixels).save(path)


@pytest.fixture
def masked_corpus(tmp_path) -> Path:
    folder = tmp_path / "posts"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    _mask(folder / "a_mask.png", (32, 32), (0, 0, 16, 32))  # the left half: area 0.5
    _mask(folder / "b_mask.png", (16, 16), (0, 0, 8, 8))  # a quarter, at another size than its image
    (folder / "c_mask.png").write_bytes(b"not a png")  # does not decode: no mask embedding
    rows = [
        "id,image,caption,mask",
        "p1,a.png,红色连衣裙,a_mask.png",
        "p2,b.png,蓝色牛仔裤,b_mask.png",
        "p3,c.png,白色衬衫,c_mask.png",
        "p4,a.png,没有掩码,",
        "p5,,只有文字,",
    ]
    (folder / "posts.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder / "posts.csv"


def _add(settings, name: str, file: Path, echo=None):
    return corpus_add.add_corpus(
        settings=settings, name=name, file=file, workers=1, progress=False, echo=echo
    )


def _encode(settings, name: str, echo=None):
    from indexer.corpus.encode import encode_corpus

    return encode_corpus(
        settings=settings, name=name, model="tiny", precision="fp32", workers=1, progress=False, echo=echo
    )


def test_mask_column_add_encode_load(settings, masked_corpus, tiny_mapper):
    said: list[str] = []
    _add(settings, "posts", masked_corpus, echo=said.append)
    assert any(line.startswith("mask unreadable: p3") for line in said)
    items = corpus.load_items(settings=settings, name="posts")
    assert [i.mask_area for i in items] == [0.5, 0.25, None, None, None]
    assert items[0].mask_path == str(masked_corpus.parent / "a_mask.png") and items[3].mask_path is None
    assert "mask" not in items[0].attributes  # a reserved field, not an attribute

    _encode(settings, "posts")
    emb = corpus.load_embeddings(settings=settings, name="posts")
    assert emb.mask_mask.tolist() == [True, True, False, False, False]
    np.testing.assert_allclose(emb.mask_area, [0.5, 0.25, np.nan, np.nan, np.nan])
    assert emb.mask_vectors.shape == emb.image_vectors.shape and emb.mask_vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb.mask_vectors, axis=1), [1, 1, 0, 0, 0], atol=1e-5)

    # the masked image: the item's pixels inside the mask, CLIP's mean gray outside; what was encoded
    masked = sorted((settings.home / "corpora" / "posts" / MASKED_FOLDER).glob("*.png"))
    assert len(masked) == 2
    by_area = {
        round(float((np.asarray(Image.open(p)) != BACKGROUND).any(axis=2).mean()), 2): p for p in masked
    }
    original = np.asarray(Image.open(masked_corpus.parent / "a.png").convert("RGB"))
    half = np.asarray(Image.open(by_area[0.5]))
    assert (half[:, :16] == original[:, :16]).all() and (half[:, 16:] == BACKGROUND).all()
    vectors, _ = tiny_mapper.encode_sources("image", [str(by_area[0.5]), str(by_area[0.25])])
    np.testing.assert_allclose(emb.mask_vectors[:2], vectors, atol=1e-5)
    assert not np.allclose(emb.mask_vectors[0], emb.image_vectors[0])

    # a second encode reuses every vector (the masked images' content keys included)
    said.clear()
    _encode(settings, "posts", echo=said.append)
    assert any("images 6 reused, 0 encoded" in line for line in said), said
    np.testing.assert_allclose(
        corpus.load_embeddings(settings=settings, name="posts").mask_vectors, emb.mask_vectors
    )

    # a mask replaced in place makes the embeddings stale
    _mask(masked_corpus.parent / "a_mask.png", (32, 32), (0, 0, 8, 32))
    _add(settings, "posts", masked_corpus)
    with pytest.raises(TuwenError, match="corpus posts changed since it was encoded"):
        corpus.load_embeddings(settings=settings, name="posts")
    assert corpus.load_items(settings=settings, name="posts")[0].mask_area == 0.25


def test_a_corpus_without_masks_is_unchanged(settings, tmp_path, tiny_mapper):
    Image.new("RGB", (24, 24), (200, 30, 30)).save(tmp_path / "a.png")
    (tmp_path / "plain.csv").write_text("id,image,caption\nq1,a.png,红色\nq2,,文字\n", encoding="utf-8")
    _add(settings, "plain", tmp_path / "plain.csv")
    items = corpus.load_items(settings=settings, name="plain")
    assert all(i.mask_path is None and i.mask_area is None for i in items)
    _encode(settings, "plain")
    emb = corpus.load_embeddings(settings=settings, name="plain")
    assert emb.mask_vectors is None and emb.mask_mask is None and emb.mask_area is None
    assert not (settings.home / "corpora" / "plain" / MASKED_FOLDER).exists()
    assert emb.image_mask.tolist() == [True, False] and emb.text_mask.tolist() == [True, True]


def _square(size: int = 64, box: tuple[int, int, int, int] = (20, 16, 44, 48)) -> np.ndarray:
    pixels = np.full((size, size, 3), (235, 232, 225), np.uint8)  # a plain light background
    x0, y0, x1, y1 = box
    pixels[y0:y1, x0:x1] = (180, 30, 40)  # a coloured square (a garment)
    return pixels


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_grabcut_finds_a_coloured_square():
    truth = np.zeros((64, 64), bool)
    truth[16:48, 20:44] = True
    assert _iou(grabcut_mask(_square()), truth) >= 0.8


def test_corpus_masks_command(settings, tmp_path, capsys, tiny_mapper):
    boxes = {"s1": (20, 16, 44, 48), "s2": (12, 12, 40, 40)}
    for name, box in boxes.items():
        Image.fromarray(_square(box=box)).save(tmp_path / f"{name}.png")
    (tmp_path / "sq.csv").write_text(
        "id,image,caption\ns1,s1.png,红\ns2,s2.png,方\ns3,,文字\n", encoding="utf-8"
    )
    _add(settings, "squares", tmp_path / "sq.csv")
    rc = main(["corpus", "masks", "squares", "--home", str(settings.home)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert re.search(r"corpus squares: 2 masks made \(GrabCut\) in .*masks, mean area 0\.\d{3}", out + err)
    items = corpus.load_items(settings=settings, name="squares")
    folder = settings.home / "corpora" / "squares" / "masks"
    for item, (x0, y0, x1, y1) in zip(items, boxes.values(), strict=False):
        assert Path(item.mask_path).parent == folder
        truth = np.zeros((64, 64), bool)
        truth[y0:y1, x0:x1] = True
        assert _iou(decode_mask(Path(item.mask_path).read_bytes()), truth) >= 0.8
        assert item.mask_area == pytest.approx(truth.mean(), abs=0.05)
    assert items[2].mask_path is None
    _encode(settings, "squares")
    assert corpus.load_embeddings(settings=settings, name="squares").mask_mask.tolist() == [True, True, False]
    from analysis.load import load_corpus_data  # what the studies read: the mask modality is there

    data = load_corpus_data(settings=settings, name="squares")
    assert data.mask_mask.tolist() == [True, True, False] and data.mask_vectors.shape[0] == 3
    np.testing.assert_allclose(data.mask_area[:2], [i.mask_area for i in items[:2]])


def test_grabcut_masks_a_large_photo_at_its_own_size(settings, tmp_path):
    from indexer.corpus.masks import make_masks

    Image.fromarray(_square()).resize((1200, 1200), Image.Resampling.NEAREST).save(tmp_path / "big.png")
    (tmp_path / "big.csv").write_text("id,image\nb1,big.png\n", encoding="utf-8")
    _add(settings, "big", tmp_path / "big.csv")
    assert make_masks(settings=settings, name="big")[0] == 1
    item = corpus.load_items(settings=settings, name="big")[0]
    mask = decode_mask(Path(item.mask_path).read_bytes())
    truth = np.zeros((1200, 1200), bool)
    truth[300:900, 375:825] = True
    assert mask.shape == (1200, 1200) and _iou(mask, truth) >= 0.8


def test_unknown_corpus_for_masks(settings):
    from indexer.corpus.masks import make_masks

    with pytest.raises(TuwenError, match="unknown corpus 'nope'"):
        make_masks(settings=settings, name="nope")


def test_the_demo_draws_each_garment_through_its_silhouette():
    """``draw_item_with_mask`` draws ``draw_item``'s very picture (the same random draws) and the mask it
    was drawn through, the truth the demo scores GrabCut against; GrabCut at the demo's 2 iterations
    finds the garment."""
    import random

    from tuwen.demo.corpus import Item, draw_item, draw_item_with_mask

    item = Item("连衣裙", "红色", "条纹")
    picture, silhouette = draw_item_with_mask(item, random.Random(1), 96)
    assert picture.tobytes() == draw_item(item, random.Random(1), 96).tobytes()
    truth = np.asarray(silhouette) >= 128
    assert 0.1 < truth.mean() < 0.9
    assert _iou(grabcut_mask(np.asarray(picture), iterations=2), truth) >= 0.8


def test_masks_needs_an_iteration(settings):
    from indexer.corpus.masks import make_masks

    with pytest.raises(TuwenError, match="--iterations must be at least 1"):
        make_masks(settings=settings, name="nope", iterations=0)
