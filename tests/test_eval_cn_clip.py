"""``evaluate()`` scores exactly as Chinese-CLIP's own scripts score its prediction files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cn_clip
import pytest

from training.evaluate import evaluate

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
CN_CLIP_EVAL = Path(cn_clip.__file__).parent / "eval"


def cn_clip_score(script: str, truth: Path, predictions: Path, tmp_path: Path) -> dict:
    out = tmp_path / f"{script}.json"
    proc = subprocess.run(
        [sys.executable, str(CN_CLIP_EVAL / script), str(truth), str(predictions), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    result = json.loads(out.read_text())
    assert result["success"], (result, proc.stdout, proc.stderr)
    return result["scoreJson"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_eval_numbers_match_cn_clips_evaluation_scripts(ingested, tmp_path):
    preds = tmp_path / "preds"
    ours = evaluate(
        settings=ingested, model="tiny", split="all", predictions_out=preds, precision="fp32", workers=0
    )
    assert set(ours) == {"t2i", "i2t"} and set(ours["t2i"]) == {"r1", "r5", "r10", "mr"}
    t2i = cn_clip_score(
        "evaluation.py", preds / "t2i_ground_truth.jsonl", preds / "t2i_predictions.jsonl", tmp_path
    )
    i2t = cn_clip_score(
        "evaluation_tr.py", preds / "i2t_ground_truth.jsonl", preds / "i2t_predictions.jsonl", tmp_path
    )
    for direction, theirs in (("t2i", t2i), ("i2t", i2t)):
        for key in ("r1", "r5", "r10"):
            assert ours[direction][key] == pytest.approx(theirs[key], abs=1e-9), (direction, key)
        assert ours[direction]["mr"] == pytest.approx(theirs["mean_recall"], abs=1e-9)
    # a random model is not perfect: the comparison above is not between two 100s
    assert ours["t2i"]["r1"] < 100 and ours["i2t"]["r1"] < 100


def test_prediction_files_use_integer_ids_that_map_back(ingested, tmp_path):
    preds = tmp_path / "preds"
    evaluate(settings=ingested, model="tiny", split="all", predictions_out=preds, precision="fp32", workers=0)
    truth = read_jsonl(preds / "t2i_ground_truth.jsonl")
    predictions = read_jsonl(preds / "t2i_predictions.jsonl")
    id_map = json.loads((preds / "id_map.json").read_text(encoding="utf-8"))
    assert all(
        isinstance(r["text_id"], int) and all(isinstance(i, int) for i in r["image_ids"]) for r in truth
    )
    assert all(len(r["image_ids"]) == 10 == len(set(r["image_ids"])) for r in predictions)
    for row in truth:  # every ground-truth image id maps back to the caption's own image
        entry = id_map["text_ids"][str(row["text_id"])]
        assert id_map["image_ids"][str(row["image_ids"][0])] == entry["image_id"]
        assert row["text"] == entry["caption"]


def test_image_to_text_truth_is_cn_clips_transform_of_the_text_to_image_truth(ingested, tmp_path):
    preds = tmp_path / "preds"
    evaluate(settings=ingested, model="tiny", split="all", predictions_out=preds, precision="fp32", workers=0)
    source = tmp_path / "t2i.jsonl"
    source.write_text((preds / "t2i_ground_truth.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    subprocess.run(
        [sys.executable, str(CN_CLIP_EVAL / "transform_ir_annotation_to_tr.py"), "--input", str(source)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    theirs = {r["image_id"]: sorted(r["text_ids"]) for r in read_jsonl(tmp_path / "t2i.tr.jsonl")}
    ours = {r["image_id"]: sorted(r["text_ids"]) for r in read_jsonl(preds / "i2t_ground_truth.jsonl")}
    assert ours == theirs and len(ours) >= 10
