"""``tuwen analyze clusters`` on synthetic embeddings with six planted garment clusters, one of them
rising month by month (``tests/analysis_corpora.py``). UMAP runs once for the module (numba JIT)."""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from analysis_corpora import GARMENTS, RISING, planted_corpus
from sklearn.metrics import adjusted_rand_score

from analysis.clusters import ClusterOptions, cluster_corpus, parse_k, period_of
from analysis.clusters_report import run_clusters
from analysis.keywords import caption_tokens, class_tfidf, hashtags, top_keywords
from common.errors import TuwenError

MIN_ARI = 0.9  # planted clusters are well separated: anything less is a broken step


@pytest.fixture(scope="module")
def planted():
    return planted_corpus()


@pytest.fixture(scope="module")
def umap_report(planted, tmp_path_factory):
    data, garments = planted
    out = tmp_path_factory.mktemp("clusters")
    path = run_clusters(data, out=out, options=ClusterOptions(reduce="umap", k="2..10", seed=3))
    return json.loads(path.read_text(encoding="utf-8")), out, garments


def _labels(out) -> list[int]:
    with open(out / "assignments.csv", encoding="utf-8", newline="") as fh:
        return [int(row["cluster"]) for row in csv.DictReader(fh)]


def test_planted_garments_are_found_after_umap(umap_report):
    report, out, garments = umap_report
    assert report["k"] == len(GARMENTS)
    assert adjusted_rand_score(garments, _labels(out)) >= MIN_ARI
    sweep = report["sweep"]
    assert sweep["k"] == list(range(2, 11))
    assert len(sweep["raw"]) == len(sweep["reduced"]) == 9
    assert max(sweep["reduced"]) == pytest.approx(sweep["reduced"][sweep["k"].index(report["k"])])


def test_cluster_names_are_their_garments(umap_report):
    report, out, garments = umap_report
    labels = np.array(_labels(out))
    named = 0
    for cluster in report["clusters"]:
        majority = np.bincount(garments[labels == cluster["cluster"]]).argmax()
        named += cluster["keywords"][0].lower() == GARMENTS[majority].lower()
    assert named >= len(GARMENTS) - 1


def test_rising_share_is_recovered_as_rising(umap_report):
    report, out, garments = umap_report
    labels = np.array(_labels(out))
    rising_cluster = int(np.bincount(labels[garments == RISING]).argmax())
    slopes = {c["cluster"]: c["share_slope_points_per_period"] for c in report["clusters"]}
    assert max(slopes, key=slopes.get) == rising_cluster
    assert slopes[rising_cluster] > 2.0  # planted: +4 points a month
    assert all(s < 0.5 for c, s in slopes.items() if c != rising_cluster)
    shares = [report["shares"][p][str(rising_cluster)] for p in report["periods"]]
    assert len(shares) == 12 and np.mean(shares[-3:]) > np.mean(shares[:3]) + 0.2


def test_every_figure_table_and_the_page_are_written(umap_report):
    report, out, _ = umap_report
    names = {f for part in report["parts"] for f in part["files"]}
    expected = {
        "silhouette.png",
        "map.png",
        "shares_stacked.png",
        "shares_top5.png",
        "clusters.csv",
        "shares.csv",
    }
    expected |= {f"exemplars_C{c}.png" for c in range(report["k"])}
    assert expected <= names
    page = (out / "index.html").read_text(encoding="utf-8")
    for name in names:
        assert (out / name).stat().st_size > 0
        if name.endswith(".png"):
            assert f'src="{name}"' in page
    assert len(_labels(out)) == report["items_clustered"] == 360


def test_same_seed_same_clusters_and_another_seed_still_finds_them(planted):
    data, garments = planted
    small = ClusterOptions(reduce="umap", k="4..7", seed=5, umap_fit_sample=200)
    first, second = cluster_corpus(data, options=small), cluster_corpus(data, options=small)
    assert np.array_equal(first.labels, second.labels)
    assert first.silhouette_reduced == second.silhouette_reduced
    assert adjusted_rand_score(garments, first.labels) >= MIN_ARI  # UMAP fitted on 200, the rest transformed


@pytest.mark.parametrize("modality", ["image", "text", "both"])
def test_each_modality_without_reduction(planted, modality):
    data, garments = planted
    result = cluster_corpus(data, options=ClusterOptions(modality=modality, reduce="none", k="2..8"))
    assert result.k == len(GARMENTS)
    assert adjusted_rand_score(garments, result.labels) >= MIN_ARI
    assert result.silhouette_reduced == [] and len(result.silhouette_raw) == 7


def test_hdbscan_finds_the_clusters_itself_after_umap(planted):
    data, garments = planted
    options = ClusterOptions(reduce="umap", method="hdbscan", min_cluster_size=15, seed=3)
    result = cluster_corpus(data, options=options)
    clustered = result.labels >= 0
    assert result.k == len(GARMENTS)
    assert clustered.mean() > 0.8
    assert adjusted_rand_score(garments[clustered], result.labels[clustered]) >= MIN_ARI


def test_text_only_and_image_only_corpora(tmp_path):
    texts_only, garments = planted_corpus(n=120, images=False)
    result = cluster_corpus(texts_only, options=ClusterOptions(modality="text", reduce="none", k="6"))
    assert adjusted_rand_score(garments, result.labels) >= MIN_ARI
    with pytest.raises(
        TuwenError, match=r"--modality image: corpus planted has no image embeddings.*--modality text"
    ):
        cluster_corpus(texts_only, options=ClusterOptions(modality="image", reduce="none"))
    images_only, _ = planted_corpus(n=120, texts=False)
    path = run_clusters(images_only, out=tmp_path, options=ClusterOptions(reduce="none", k="6"))
    report = json.loads(path.read_text(encoding="utf-8"))
    assert report["k"] == 6 and all(c["keywords"] == [] for c in report["clusters"])
    assert any("no captions" in note for note in report["notes"])
    assert (tmp_path / "exemplars_C0.png").is_file()


def test_tags_represent_posts_by_their_hashtags(planted):
    data, garments = planted
    result = cluster_corpus(data, options=ClusterOptions(modality="text", text="tags", reduce="none", k="6"))
    assert adjusted_rand_score(garments, result.labels) >= MIN_ARI
    words = {w for kws in result.keywords.values() for w, _ in kws}
    assert set(GARMENTS) <= words  # the tags themselves, not jieba pieces


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("1", "--k must be at least 2"),
        ("9..3", "--k range 9..3 is empty"),
        ("many", "--k must be auto, a number or a range"),
        ("2..400", "needs more than 400 items"),
    ],
)
def test_bad_k_is_one_clear_error(spec, message):
    with pytest.raises(TuwenError, match=re.escape(message)):
        parse_k(spec, n=360)


def test_parse_k_ranges():
    assert parse_k("auto", n=360) == list(range(2, 31))
    assert parse_k("auto", n=20) == [2, 3, 4]
    assert parse_k("3..5", n=10) == [3, 4, 5]
    assert parse_k("7", n=10) == [7]


def test_bad_options_name_the_option(planted):
    data, _ = planted
    for options, message in [
        (ClusterOptions(modality="audio"), "--modality must be one of image, text, both"),
        (ClusterOptions(method="hdbscan", k="5"), "--k applies to kmeans"),
        (ClusterOptions(by="year"), "--by must be one of"),
    ]:
        with pytest.raises(TuwenError, match=re.escape(message)):
            cluster_corpus(data, options=options)


def test_cli_bad_k_exits_2_with_one_line(capsys):
    from tuwen.cli import main

    assert main(["analyze", "clusters", "anything", "--k", "9..3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tuwen analyze: error: --k range 9..3 is empty: write A..B with A <= B"]


def test_periods_of_dates_and_day_numbers():
    assert period_of("2025-03-04", "month")[1] == "2025-03"
    assert period_of("2025-03-04T10:00:00", "week")[1] == "2025-W10"
    assert period_of("2025-03-04", "day")[1] == "2025-03-04"
    assert period_of(45, "month")[1] == "days 30–59"
    assert period_of(45, "week")[1] == "days 42–48"
    assert period_of(None, "day") is None and period_of("not a date", "day") is None


def test_class_tfidf_weights_words_of_one_class_over_shared_ones():
    docs = [["红色", "连衣裙"], ["红色", "连衣裙"], ["红色", "帽子"], ["蓝色", "帽子"]]
    classes, vocabulary, weights = class_tfidf(docs, [0, 0, 1, 1])
    assert classes == [0, 1]
    w = dict(zip(vocabulary, weights[0], strict=True))
    assert w["连衣裙"] > w["红色"] > 0 and w["帽子"] == 0
    top = top_keywords(docs, [0, 0, 1, 1], top=2)
    assert [word for word, _ in top[0]] == ["连衣裙"]  # 红色 is in both clusters: it names neither
    assert [word for word, _ in top[1]] == ["帽子", "蓝色"]


def test_tokens_drop_stop_words_dates_and_single_characters():
    tokens = caption_tokens("今天的红色连衣裙穿搭 05-17 #法式连衣裙 #约会")
    assert "红色" in tokens and "连衣裙" in tokens
    assert not {"的", "今天", "05", "17", "#"} & set(tokens)
    assert hashtags("标题 #法式连衣裙 #约会穿搭#显瘦 无标签") == ["法式连衣裙", "约会穿搭", "显瘦"]


def test_umaps_kernels_keep_what_they_compile_on_disk(umap_report):
    """The kernels that take UMAP's ~11 s of compiling are in numba's disk cache once a reduction
    ran (read from it, or compiled and written to it), so the next process reads them."""
    heavy = {
        "umap.umap_": ["smooth_knn_dist", "compute_membership_strengths"],
        "umap.layouts": ["_nb_optimize_layout_euclidean_single_epoch"],
    }
    for module, names in heavy.items():
        for name in names:
            kernel = getattr(sys.modules[module], name)
            stats = kernel.stats
            assert stats.cache_path, f"{module}.{name} is not cached"
            assert sum(stats.cache_hits.values()) + sum(stats.cache_misses.values()) >= 1
            index = Path(stats.cache_path).glob(f"*.{kernel.py_func.__name__}-*.nbi")
            assert any(index), f"{module}.{name}: no index file in {stats.cache_path}"
