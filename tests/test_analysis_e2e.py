"""The studies end to end on the demo posts (``tuwen.demo.posts``) embedded by the ``tiny`` model:
first straight from the encoder, then through the store as a user runs them
(``corpus add`` → ``corpus encode`` → ``analyze clusters`` / ``analyze alignment``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from analysis.alignment import run_alignment
from analysis.clusters import ClusterOptions
from analysis.clusters_report import run_clusters
from analysis.data import CorpusData
from analysis.options import AlignmentOptions
from tuwen.cli import main
from tuwen.demo.posts import RISING, generate_demo_posts

pytestmark = pytest.mark.slow
# The untrained tiny model's text tower separates the garment words of the captions; its image
# tower, untrained, does not separate the drawings (the demo fine-tunes it first), so the planted
# structure is asserted on the captions here.
MIN_TEXT_ARI = 0.6


@pytest.fixture(scope="module")
def posts(tmp_path_factory):
    root = tmp_path_factory.mktemp("posts")
    generate_demo_posts(root, seed=2, n_posts=240, image_size=64)
    return root, [
        json.loads(line) for line in (root / "posts.jsonl").read_text(encoding="utf-8").splitlines()
    ]


@pytest.fixture(scope="module")
def encoded(posts, one_thread) -> CorpusData:
    from models.encoder import Encoder
    from models.factory import create_model_and_transforms

    root, rows = posts
    encoder = Encoder(create_model_and_transforms("tiny", device="cpu"))
    paths = [str(root / r["image"]) for r in rows]
    images, errors = encoder.encode_image_files(paths, workers=0)
    assert not any(errors)
    n = len(rows)
    return CorpusData(
        name="posts",
        ids=[r["id"] for r in rows],
        captions=[r["caption"] for r in rows],
        image_paths=paths,
        times=[r["time"] for r in rows],
        attributes={"garment": [r["garment"] for r in rows]},
        image_vectors=images,
        image_mask=np.ones(n, dtype=bool),
        text_vectors=encoder.encode_texts([r["caption"] for r in rows]),
        text_mask=np.ones(n, dtype=bool),
        model_id=encoder.model_id,
    )


def test_caption_clusters_find_the_garments_and_the_rising_one(encoded, tmp_path):
    path = run_clusters(
        encoded, out=tmp_path, options=ClusterOptions(modality="text", reduce="none", k="4..8")
    )
    report = json.loads(path.read_text(encoding="utf-8"))
    garments = encoded.attributes["garment"]
    labels = [int(line.split(",")[2]) for line in (tmp_path / "assignments.csv").read_text().splitlines()[1:]]
    assert adjusted_rand_score(garments, labels) >= MIN_TEXT_ARI
    rising = [c for c in report["clusters"] if c["keywords"] and c["keywords"][0] == RISING]
    assert rising, [c["keywords"] for c in report["clusters"]]
    slopes = [c["share_slope_points_per_period"] for c in report["clusters"]]
    assert rising[0]["share_slope_points_per_period"] == max(slopes) > 1.0
    assert (tmp_path / "exemplars_C0.png").stat().st_size > 10_000  # real thumbnails drawn


def test_alignment_report_of_the_posts(encoded, tmp_path):
    path = run_alignment(encoded, AlignmentOptions(n=6, gallery=2), out=tmp_path)
    report = json.loads(path.read_text(encoding="utf-8"))
    assert report["pairs"] == 240
    assert set(report["recall"]) == {"t2i", "i2t"}
    assert all(0 <= report["recall"][d][m] <= 100 for d in ("t2i", "i2t") for m in ("r1", "r5", "r10", "mr"))
    assert (tmp_path / "gallery_caption_to_image.png").is_file() and (tmp_path / "index.html").is_file()


def test_through_the_store_with_the_cli(posts, tmp_path, capsys, one_thread):
    root, _ = posts
    home = str(tmp_path / "home")
    assert main(["corpus", "add", "posts", str(root / "posts.jsonl"), "--home", home]) == 0
    assert main(["corpus", "encode", "posts", "--model", "tiny", "--home", home]) == 0
    assert (
        main(
            [
                "analyze",
                "clusters",
                "posts",
                "--modality",
                "text",
                "--reduce",
                "none",
                "--k",
                "6",
                "--home",
                home,
            ]
        )
        == 0
    )
    assert main(["analyze", "alignment", "posts", "--home", home]) == 0
    out = capsys.readouterr().out.split()
    for study in ("clusters", "alignment"):
        page = tmp_path / "home" / "analysis" / f"{study}-posts" / "index.html"
        assert page.is_file() and str(page) in out
    assert main(["analyze", "clusters", "posts", "--modality", "image", "--k", "500", "--home", home]) == 2
    assert "needs more than 500 items" in capsys.readouterr().err
