import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from bsviz.fer.experiments import ck_experiment, fer2013_experiment
from bsviz.fer.reports import format_summary, results_table
from bsviz.fer.train import TrainConfig

TINY = {"widths": (4, 4, 8, 8, 8, 8, 16), "feature_dim": 16, "batch_size": 32,
        "progress": False, "epochs": 1, "freeze_epochs": 0}


def test_fer2013_then_ck_experiments(tmp_path, tiny_fer, tiny_ck, capsys):
    base = TrainConfig(data_dir=str(tiny_fer), labels=str(tiny_fer / "fer.npz"),
                       out_dir=str(tmp_path / "fer"), cache_dir=str(tmp_path / "cache"), **TINY)
    fer = fer2013_experiment(base, seeds=[0, 1], fusion_epochs=1)
    assert set(fer["models"]) == {"image", "blendshape", "two_stream"}
    assert fer["models"]["image"]["test_accuracy_n"] == 2
    assert fer["models"]["image"]["runs"][0]["n_test"] == 28  # PrivateTest only
    assert "difference_mean" in fer["two_stream_minus_image"]
    assert fer["models"]["two_stream"]["test_accuracy_flip_n"] == 2  # and with test-time flip
    assert fer["models"]["image"]["val_accuracy_n"] == 2  # the scores that chose the checkpoints
    image_run = json.loads((tmp_path / "fer" / "image" / "seed0" / "result.json").read_text())
    history = json.loads((tmp_path / "fer" / "image" / "seed0" / "history.json").read_text())
    assert image_run["val_accuracy"] == history[image_run["best_epoch"] - 1]["val_accuracy"]
    assert "difference_mean" in fer["two_stream_minus_image_flip"]
    saved = json.loads((tmp_path / "fer" / "summary.json").read_text())
    assert saved["models"]["blendshape"]["test_mae_mean"] == pytest.approx(
        fer["models"]["blendshape"]["test_mae_mean"])
    # the release: the two-stream run with the best PublicTest accuracy, float16, its card
    from bsviz.fer.checkpoints import load_checkpoint, model_from_checkpoint
    from bsviz.ui.cli import main

    runs = [tmp_path / "fer" / "two_stream" / f"seed{s}" for s in (0, 1)]
    main(["ship", *map(str, runs), "--out", str(tmp_path / "release.pt")])
    assert json.loads(capsys.readouterr().out)["seed"] in (0, 1)  # the card, printed
    shipped = load_checkpoint(tmp_path / "release.pt")
    vals = [json.loads((r / "result.json").read_text())["val_accuracy"] for r in runs]
    chosen = json.loads((runs[int(vals[1] > vals[0])] / "result.json").read_text())
    card = shipped["card"]
    assert card["seed"] == chosen["config"]["seed"] and card["test_accuracy"] == chosen["test_accuracy"]
    assert card["chosen_from"] == {str(r): v for r, v in zip(runs, vals)}
    assert all(v.dtype == torch.float16 for v in shipped["model"].values() if v.is_floating_point())
    assert "optimizer" not in shipped and model_from_checkpoint(shipped).kind == "two_stream"
    # a second call reads the finished runs instead of training again
    mtime = (tmp_path / "fer" / "image" / "seed0" / "best.pt").stat().st_mtime
    fer2013_experiment(base, seeds=[0], fusion_epochs=1)
    assert (tmp_path / "fer" / "image" / "seed0" / "best.pt").stat().st_mtime == mtime

    ck_base = TrainConfig(dataset="ck+", data_dir=str(tiny_ck), labels=str(tiny_ck / "ck.npz"),
                          out_dir=str(tmp_path / "ck"), cache_dir=str(tmp_path / "cache"), **TINY)
    ck = ck_experiment(ck_base, str(tmp_path / "fer/image/seed0/best.pt"),
                       str(tmp_path / "fer/blendshape/seed0/best.pt"), folds=[0, 1])
    confusion = np.array(ck["models"]["image"]["confusion"])
    assert confusion.shape == (7, 7) and ck["classes"][1] == "contempt"
    assert confusion.sum() == sum(r["n_test"] for r in ck["models"]["image"]["runs"])
    assert (tmp_path / "ck" / "confusion_two_stream.png").exists()
    # one network alone (a recipe study of the image stream): the other is not trained
    image_only = ck_experiment(replace(ck_base, out_dir=str(tmp_path / "ck_image")),
                               str(tmp_path / "fer/image/seed0/best.pt"),
                               str(tmp_path / "fer/blendshape/seed0/best.pt"), folds=[0],
                               networks=("image",))
    assert set(image_only["models"]) == {"image"} and "two_stream_minus_image" not in image_only
    assert sorted(p.name for p in (tmp_path / "ck_image").iterdir() if p.is_dir()) == ["image"]
    assert image_only["models"]["image"]["runs"][0]["test_accuracy"] == pytest.approx(
        ck["models"]["image"]["runs"][0]["test_accuracy"])  # the same run, deterministic
    table = results_table([fer, ck])
    assert "two-stream − image" in table and "FaceNet2ExpNet" in table
    assert "two-stream − image, test-time flip" in table
    assert "two_stream (test-time flip)" in format_summary(ck)
    # the README's table, from the summaries' JSON on the command line
    from bsviz.ui.cli import main

    (tmp_path / "ref.json").write_text(json.dumps({"command": "bsviz eval reference ...",
                                                   "ck+ mediapipe": {"accuracy": 0.5}}))
    main(["eval", "table", str(tmp_path / "fer" / "summary.json"),
          str(tmp_path / "ck" / "summary.json"), "--reference", str(tmp_path / "ref.json")])
    printed = capsys.readouterr().out
    saved = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("fer", "ck")]
    assert printed == results_table(saved, {"ck+ mediapipe": {"accuracy": 0.5}}) + "\n"
    assert "| ck+ | logistic regression on mediapipe blendshapes | 50.00 % | | |" in printed


def test_blendshape_reference_writes_nothing_into_the_data(tmp_path, tiny_ck, tiny_fer):
    from dataclasses import asdict

    from bsviz.fer.checkpoints import save_checkpoint
    from bsviz.fer.experiments import blendshape_reference
    from bsviz.fer.models import Stream, blendshape_stream_config
    from bsviz.vision.scores import rig_names

    data = tmp_path / "data"
    data.mkdir()
    (data / "ck+48").symlink_to(tiny_ck / "ck+48")
    (data / "fer2013").symlink_to(tiny_fer / "fer2013")
    cfg = blendshape_stream_config(53, widths=(4, 4, 8, 8, 8, 8, 16), feature_dim=16)
    save_checkpoint(tmp_path / "bs.pt", {"kind": "blendshape", "model_config": asdict(cfg),
                                         "model": Stream(cfg).state_dict(), "classes": [],
                                         "shape_names": list(rig_names())})
    before = sorted(p.name for p in data.iterdir())
    result = blendshape_reference(data, tiny_ck / "ck.npz", tiny_fer / "fer.npz",
                                  regressor=tmp_path / "bs.pt", n_folds=2)
    assert sorted(p.name for p in data.iterdir()) == before
    assert set(result) == {"ck+ mediapipe", "ck+ regressed", "fer2013 mediapipe",
                           "fer2013 regressed"}
    assert 0 <= result["fer2013 regressed"]["accuracy"] <= 1


def test_an_experiment_goes_on_from_its_records_without_runs(tmp_path, tiny_fer):
    import shutil

    base = TrainConfig(data_dir=str(tiny_fer), labels=str(tiny_fer / "fer.npz"),
                       out_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"), **TINY)
    records = tmp_path / "results"
    first = fer2013_experiment(base, seeds=[0], fusion_epochs=1, records=records)
    assert sorted(p.name for p in records.iterdir()) == [
        "blendshape-seed0.json", "image-seed0.json", "two_stream-seed0.json"]
    shutil.rmtree(tmp_path / "runs")  # a fresh clone: the committed records only
    again = fer2013_experiment(base, seeds=[0], fusion_epochs=1, records=records)
    assert not (tmp_path / "runs" / "image").exists()  # nothing trained again
    assert again["models"]["two_stream"]["test_accuracy_mean"] == first["models"]["two_stream"][
        "test_accuracy_mean"]
    # without the fused run's record its streams' checkpoints are needed: they are retrained,
    # the same runs (deterministic for a seed)
    (records / "two_stream-seed0.json").unlink()
    shutil.rmtree(tmp_path / "runs")
    third = fer2013_experiment(base, seeds=[0], fusion_epochs=1, records=records)
    assert (tmp_path / "runs" / "image" / "seed0" / "best.pt").exists()
    assert third["models"]["image"]["test_accuracy_mean"] == first["models"]["image"][
        "test_accuracy_mean"]
    assert third["models"]["two_stream"]["test_accuracy_mean"] == pytest.approx(
        first["models"]["two_stream"]["test_accuracy_mean"])


def test_eval_synthetic_writes_each_checkpoints_error(tmp_path, tiny_ck, rig):
    """`bsviz eval synthetic CKPT --synth FILE`: the stream's MAE against the exact weights,
    MediaPipe's and a constant guess's, computed here independently."""
    from conftest import synth_file

    from bsviz.fer.checkpoints import load_checkpoint, model_from_checkpoint
    from bsviz.fer.train import train
    from bsviz.ui.cli import main

    run = TrainConfig(kind="blendshape", dataset="ck+", data_dir=str(tiny_ck),
                      labels=str(tiny_ck / "ck.npz"), out_dir=str(tmp_path / "bs"),
                      cache_dir=str(tmp_path / "cache"), **TINY)
    train(run)
    synth = synth_file(tmp_path / "synth.npz", rig.names, n=12)
    model = str(tmp_path / "bs" / "best.pt")
    main(["eval", "synthetic", model, "--synth", str(tmp_path / "synth.npz"),
          "--out", str(tmp_path / "out" / "mae.json")])
    saved = json.loads((tmp_path / "out" / "mae.json").read_text())[model]
    net = model_from_checkpoint(load_checkpoint(model)).float().eval()
    with torch.no_grad():
        ours = net.streams()["blendshape"](torch.from_numpy(synth.images / 255).float()).weights
    assert saved["n"] == 12
    assert saved["ours"] == pytest.approx(float(np.abs(ours.numpy() - synth.weights).mean()), rel=1e-5)
    assert saved["mediapipe"] == pytest.approx(
        float(np.abs(synth.mediapipe_weights - synth.weights).mean()), rel=1e-5)
    assert saved["constant_guess"] == pytest.approx(
        float(np.abs(synth.weights.mean(0) - synth.weights).mean()), rel=1e-5)
