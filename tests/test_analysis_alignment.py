"""``tuwen analyze alignment`` on synthetic pairs: each pair its own direction, image and caption
vectors near it (a well-aligned model), or captions shuffled against images (an unaligned one)."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
from analysis_corpora import planted_corpus
from PIL import Image

from analysis.alignment import alignment_numbers, run_alignment
from analysis.data import CorpusData
from analysis.options import AlignmentOptions
from analysis.report import use_cjk_font
from common.errors import TuwenError
from indexer.metrics import metrics, rank


def paired_corpus(tmp_path, *, n: int = 40, noise: float = 0.3, shuffle: bool = False, english: bool = False):
    rng = np.random.default_rng(7)
    directions = rng.normal(size=(n, 16))

    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    images = unit(directions + noise * rng.normal(size=directions.shape))
    texts = unit(directions + noise * rng.normal(size=directions.shape))
    if shuffle:
        texts = texts[rng.permutation(n)]
    paths = []
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (40, 30), tuple(int(v) for v in rng.integers(0, 255, 3))).save(path)
        paths.append(str(path))
    captions = [
        f"A film poster number {i}, a summary" if english else f"第{i}号海报的剧情简介" for i in range(n)
    ]
    return CorpusData(
        name="pairs",
        ids=[f"m{i}" for i in range(n)],
        captions=captions,
        image_paths=paths,
        times=[None] * n,
        image_vectors=images,
        image_mask=np.ones(n, dtype=bool),
        text_vectors=texts,
        text_mask=np.ones(n, dtype=bool),
        model_id="synthetic",
    )


def test_report_of_aligned_pairs(tmp_path):
    """The report, its figures drawn without a missing glyph where a CJK font is installed (a
    check mark the font lacked showed as a box in every gallery)."""
    data = paired_corpus(tmp_path)
    with warnings.catch_warnings():
        if use_cjk_font():
            warnings.filterwarnings("error", message="Glyph .* missing from font")
        path = run_alignment(data, AlignmentOptions(n=6, gallery=2, seed=1), out=tmp_path / "report")
    report = json.loads(path.read_text(encoding="utf-8"))
    assert report["pairs"] == 40
    assert report["recall"]["t2i"]["r1"] >= 90 and report["recall"]["i2t"]["r1"] >= 90
    heat = report["heatmap"]
    assert len(heat["ids"]) == 6 and np.array(heat["cosine"]).shape == (6, 6)
    assert heat["rows_best_on_diagonal"] == 6 and heat["matched_mean"] > heat["unmatched_mean"] + 0.5
    out = tmp_path / "report"
    for name in ("heatmap.png", "gallery_caption_to_image.png", "gallery_image_to_caption.png", "recall.csv"):
        assert (out / name).stat().st_size > 0
    page = (out / "index.html").read_text(encoding="utf-8")
    assert 'src="heatmap.png"' in page and "caption → image" in page


def test_recall_is_tuwen_evals_metric_and_falls_to_chance_when_unaligned(tmp_path):
    data = paired_corpus(tmp_path, n=60, shuffle=True, english=True)
    numbers = alignment_numbers(data, n=6, gallery=3, seed=0)
    expected = metrics(rank(data.text_vectors, data.image_vectors, list(range(60))))
    assert numbers["recall"] == expected
    assert numbers["recall"]["t2i"]["r5"] < 25  # chance is 5 / 60 = 8.3 %
    assert numbers["chance_r5"]["t2i"] == pytest.approx(100 * 5 / 60)
    run_alignment(
        data, AlignmentOptions(n=4, gallery=1), out=tmp_path / "english"
    )  # English captions draw too
    assert (tmp_path / "english" / "index.html").is_file()


def test_same_seed_same_sample(tmp_path):
    data = paired_corpus(tmp_path)
    first = alignment_numbers(data, n=5, gallery=2, seed=3)
    second = alignment_numbers(data, n=5, gallery=2, seed=3)
    other = alignment_numbers(data, n=5, gallery=2, seed=4)
    assert np.array_equal(first["sample"], second["sample"])
    assert np.array_equal(first["similarity"], second["similarity"])
    assert not np.array_equal(first["sample"], other["sample"])


def test_only_items_with_both_sides_are_pairs(tmp_path):
    data = paired_corpus(tmp_path, n=20)
    data.image_mask[:5] = False
    data.image_vectors[:5] = 0
    assert alignment_numbers(data, n=3, gallery=1, seed=0)["pairs"] == 15
    with pytest.raises(
        TuwenError, match=re.escape("--n 16 is larger than the 15 image–caption pairs of corpus pairs")
    ):
        alignment_numbers(data, n=16, gallery=1, seed=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 1, "gallery": 1}, "--n must be at least 2"),
        ({"n": 3, "gallery": 0}, "--gallery must be at least 1"),
    ],
)
def test_bad_sizes_are_one_clear_error(tmp_path, kwargs, message):
    with pytest.raises(TuwenError, match=re.escape(message)):
        alignment_numbers(paired_corpus(tmp_path, n=10), seed=0, **kwargs)


def test_a_corpus_without_images_has_no_pairs():
    texts_only, _ = planted_corpus(n=30, images=False)
    with pytest.raises(
        TuwenError, match="corpus planted has no image embeddings: alignment needs image–caption pairs"
    ):
        alignment_numbers(texts_only, n=6, gallery=3, seed=0)


def test_cli_n_below_two_exits_2_with_one_line(capsys):
    from tuwen.cli import main

    assert main(["analyze", "alignment", "anything", "--n", "1"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "tuwen analyze: error: --n must be at least 2 (got 1)"
    ]
