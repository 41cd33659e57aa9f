import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import synth_file

from bsviz.fer.augment import augment
from bsviz.fer.checkpoints import load_checkpoint, model_from_checkpoint
from bsviz.fer.train import Split, TrainConfig, build_model, evaluate, train

TINY = {"widths": (4, 4, 8, 8, 8, 8, 16), "feature_dim": 16, "batch_size": 32,
        "progress": False, "augment": True}


def cfg(tmp_path, data_root, **kw) -> TrainConfig:
    return TrainConfig(dataset="ck+", data_dir=str(data_root), out_dir=str(tmp_path / "run"),
                       cache_dir=str(data_root / "cache"), **{**TINY, **kw})


def test_a_few_steps_lower_the_loss(tmp_path, tiny_ck):
    result = train(cfg(tmp_path, tiny_ck, kind="image", epochs=4, lr=3e-3, augment=False))
    losses = [h["train_loss"] for h in result["history"]]
    assert losses[-1] < losses[0]
    run = tmp_path / "run"
    for name in ("best.pt", "last.pt", "metrics.csv", "history.json", "result.json",
                 "curves.png", "confusion.png"):
        assert (run / name).exists(), name
    assert np.array(result["confusion"]).sum() == result["n_test"]


def test_checkpoint_reloads_to_identical_outputs(tmp_path, tiny_ck):
    train(cfg(tmp_path, tiny_ck, kind="image", epochs=1))
    checkpoint = load_checkpoint(tmp_path / "run" / "best.pt")  # weights_only=True inside
    assert checkpoint["classes"][0] == "anger" and checkpoint["kind"] == "image"
    assert checkpoint["config"]["epochs"] == 1 and len(checkpoint["shape_names"]) == 53
    a, b = model_from_checkpoint(checkpoint), model_from_checkpoint(checkpoint)
    x = torch.rand(4, 1, 48, 48)
    torch.testing.assert_close(a(x).logits, b(x).logits, rtol=0, atol=0)
    torch.save({"x": object()}, tmp_path / "unsafe.pt")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "unsafe.pt")


def test_resume_continues_the_same_run(tmp_path, tiny_ck):
    full = train(cfg(tmp_path / "a", tiny_ck, kind="image", epochs=3))
    seen = []

    def interrupt_after_first_epoch(history):  # as a KeyboardInterrupt in a notebook would
        seen.append(len(history))
        if len(history) == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg(tmp_path / "b", tiny_ck, kind="image", epochs=3), on_epoch=interrupt_after_first_epoch)
    assert seen == [1] and (tmp_path / "b" / "run" / "last.pt").exists()
    resumed = train(cfg(tmp_path / "b", tiny_ck, kind="image", epochs=3, resume=True))
    assert [h["train_loss"] for h in resumed["history"]] == pytest.approx(
        [h["train_loss"] for h in full["history"]], rel=1e-5)
    a = load_checkpoint(tmp_path / "a" / "run" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "run" / "last.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_a_run_resumes_from_another_folder_with_the_same_files(tmp_path, tiny_ck, monkeypatch):
    """A run started from the repository's root with relative paths (the CLI) continues from
    a notebook's folder with absolute ones; another label file is still refused."""
    def stop(history):
        raise KeyboardInterrupt

    monkeypatch.chdir(tiny_ck)
    relative = cfg(tmp_path, tiny_ck, kind="blendshape", epochs=2, labels="ck.npz")
    with pytest.raises(KeyboardInterrupt):
        train(relative, on_epoch=stop)
    monkeypatch.chdir(tmp_path)
    absolute = cfg(tmp_path, tiny_ck, kind="blendshape", epochs=2, resume=True,
                   labels=str(tiny_ck / "ck.npz"))
    assert [h["epoch"] for h in train(absolute)["history"]] == [1, 2]
    (tmp_path / "other.npz").write_bytes((tiny_ck / "ck.npz").read_bytes())
    with pytest.raises(ValueError, match="other labels"):
        train(cfg(tmp_path, tiny_ck, kind="blendshape", epochs=3, resume=True,
                  labels="other.npz"))


def test_blendshape_and_two_stream_runs(tmp_path, tiny_ck):
    bs = train(cfg(tmp_path / "bs", tiny_ck, kind="blendshape", epochs=2, labels=str(tiny_ck / "ck.npz")))
    assert bs["test_mae"] is not None and 0 < bs["test_mae"] < 0.5
    img = tmp_path / "img"
    train(cfg(img, tiny_ck, kind="image", epochs=1))
    two = train(cfg(tmp_path / "two", tiny_ck, kind="two_stream", epochs=1, freeze_epochs=1,
                    labels=str(tiny_ck / "ck.npz"), init_image=str(img / "run" / "best.pt"),
                    init_blendshape=str(tmp_path / "bs" / "run" / "best.pt")))
    assert two["test_accuracy"] is not None and two["test_mae"] is not None
    # the frozen epoch trained the fusion layer and left both streams as pretrained
    fused = load_checkpoint(tmp_path / "two" / "run" / "last.pt")["model"]
    for stream, path in (("image", img), ("blendshape", tmp_path / "bs")):
        pretrained = load_checkpoint(path / "run" / "best.pt")["model"]
        for key, value in pretrained.items():
            torch.testing.assert_close(fused[f"{stream}.{key}"], value, rtol=0, atol=0)


def test_test_time_flip_averages_the_face_and_its_mirror_image():
    names = ("mouthSmile_L", "mouthSmile_R", "jawOpen")
    mirror = [1, 0, 2]
    classes = ("a", "b", "c")
    config = TrainConfig(kind="two_stream", device="cpu", **{**TINY, "augment": False})
    torch.manual_seed(0)
    model = build_model(config, classes, len(names)).eval()
    images = torch.rand(40, 1, 48, 48)
    weights = torch.rand(40, 3)
    weights[3] = float("nan")  # a face without a label
    split = Split(images, torch.randint(0, 3, (40,)), weights)
    plain = evaluate(model, split, config)
    flipped = evaluate(model, split, config, mirror=mirror)
    with torch.no_grad():  # the same by hand, in float32
        a, b = model(images), model(images.flip(3))
    probabilities = a.logits.softmax(1) + b.logits.softmax(1)
    averaged = (a.weights + b.weights[:, mirror]) / 2
    labelled = ~torch.isnan(weights).any(dim=1)
    assert np.mean(flipped.predictions == probabilities.argmax(1).numpy()) > 0.95  # bf16 ties
    assert flipped.mae == pytest.approx((averaged - weights)[labelled].abs().mean().item(), abs=2e-3)
    assert flipped.loss == plain.loss  # the loss is of the faces as given
    assert not np.array_equal(flipped.predictions, plain.predictions) or flipped.mae != plain.mae


def test_two_stream_needs_labels(tmp_path, tiny_ck):
    with pytest.raises(ValueError, match="needs blendshape labels"):
        train(cfg(tmp_path, tiny_ck, kind="two_stream", epochs=1))


def test_augment_mirrors_weights_with_the_image():
    names = ("mouthSmile_L", "mouthSmile_R", "jawOpen")
    images = torch.zeros(64, 1, 8, 8)
    images[:, :, :, :4] = 1.0  # bright left half
    weights = torch.tensor([[1.0, 0.0, 0.5]]).repeat(64, 1)
    out, w = augment(images, weights, [1, 0, 2], torch.Generator().manual_seed(0))
    flipped = out[:, 0, :, :4].mean(dim=(1, 2)) < out[:, 0, :, 4:].mean(dim=(1, 2))
    assert 10 < flipped.sum() < 54
    assert torch.equal(w[flipped, 1], torch.ones(int(flipped.sum())))
    assert torch.equal(w[~flipped, 0], torch.ones(int((~flipped).sum())))
    assert (w[:, 2] == 0.5).all() and names


def test_torchrun_two_processes_on_cpu(tmp_path, tiny_ck):
    out = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
         "-m", "bsviz.ui.cli", "train", "--dataset", "ck+", "--data-dir", str(tiny_ck),
         "--out-dir", str(out), "--cache-dir", str(tiny_ck / "cache"), "--epochs", "1", "--batch-size", "16",
         "--widths", "4,4,8,8,8,8,16", "--feature-dim", "16", "--progress", "false"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and (out / "best.pt").exists()


def test_erase_and_mixup_keep_shapes_ranges_and_label_sums():
    from bsviz.fer.augment import erase, mixup

    gen = torch.Generator().manual_seed(0)
    images = torch.full((64, 1, 48, 48), 0.5)
    erased = erase(images, 1.0, gen)
    changed = (erased != 0.5).flatten(1).float().mean(1)  # share of each image erased
    assert erased.shape == images.shape and erased.min() >= 0 and erased.max() <= 1
    assert ((changed > 0.01) & (changed < 0.4)).all()
    assert torch.equal(erase(images, 0.0, gen), images)
    labels = torch.arange(64) % 7
    weights = torch.rand(64, 53)
    weights[3] = torch.nan
    _, targets, w = mixup(torch.rand(64, 1, 48, 48), labels, weights, 7, 0.4, gen)
    torch.testing.assert_close(targets.sum(1), torch.ones(64))
    assert (targets.max(1).values >= 0.5).all()  # each image mostly itself or its partner
    assert torch.isnan(w).any(dim=1).sum() in (1, 2)  # the unlabelled row stays unlabelled


def test_sgd_ema_recipe_trains_validates_the_average_and_resumes(tmp_path, tiny_ck):
    recipe = {"kind": "image", "epochs": 2, "optimizer": "sgd", "lr": 0.05, "ema": 0.9,
              "erasing": 0.25, "mixup": 0.2, "labels": str(tiny_ck / "ck.npz")}
    full = train(cfg(tmp_path / "a", tiny_ck, **recipe))
    checkpoint = load_checkpoint(tmp_path / "a" / "run" / "last.pt")
    averaged, trained = checkpoint["model"], checkpoint["trained"]
    assert any(not torch.equal(averaged[k], trained[k]) for k in averaged)
    assert all(r["cpu_seconds"] > 0 for r in full["history"])

    def stop(history):
        if len(history) == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg(tmp_path / "b", tiny_ck, **recipe), on_epoch=stop)
    resumed = train(cfg(tmp_path / "b", tiny_ck, **recipe, resume=True))
    assert [h["val_loss"] for h in resumed["history"]] == pytest.approx(
        [h["val_loss"] for h in full["history"]], rel=1e-5)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="lion")


def test_networks_read_the_photo_path_crops_of_the_label_file(tiny_ck):
    from bsviz.fer.labels import load_labels
    from bsviz.fer.train import load_data
    from bsviz.vision.faces import FaceFinder

    config = TrainConfig(dataset="ck+", data_dir=str(tiny_ck), labels=str(tiny_ck / "ck.npz"),
                         fold=0, n_folds=10)
    data = load_data(config)
    labels = load_labels(tiny_ck / "ck.npz")
    # the first test image, cropped afresh by the finder as `bsviz predict` would crop it
    from bsviz.fer import data as datasets

    ds = datasets.load_ck(tiny_ck / "ck+48")
    fold = datasets.subject_folds(ds.subjects, ds.labels, 10, seed=0)[0]
    with FaceFinder() as finder:
        crop = finder.find_all(ds.paths[fold.test[0]])[0].crop
    assert np.abs(data.test.images[0, 0].numpy() - crop).max() <= 0.5 / 255 + 1e-6
    assert set(labels.found_by.tolist()) <= {"landmarker", "detector", "whole image"}


def test_blendshape_stream_learns_the_fitted_weights_when_asked(tmp_path, tiny_ck):
    from bsviz.fer.labels import load_labels
    from bsviz.fer.train import load_data

    mediapipe = load_data(cfg(tmp_path, tiny_ck, kind="blendshape", labels=str(tiny_ck / "ck.npz")))
    fitted = load_data(cfg(tmp_path, tiny_ck, kind="blendshape", labels=str(tiny_ck / "ck.npz"),
                           blendshape_labels="fit"))
    stored = load_labels(tiny_ck / "ck.npz")
    test_rows = stored.rows(sorted((tiny_ck / "ck+48").rglob("*.png")), tiny_ck / "ck+48")
    assert set(map(tuple, fitted.test.weights.numpy().round(5))) <= set(
        map(tuple, stored.fitted[test_rows].round(5)))
    torch.testing.assert_close(fitted.test.images, mediapipe.test.images)
    assert not torch.allclose(fitted.test.weights, mediapipe.test.weights)
    with pytest.raises(ValueError, match="blendshape_labels"):
        TrainConfig(blendshape_labels="mediapipe")


def test_blendshape_stream_trains_on_synthetic_renders_too(tmp_path, tiny_ck, rig):
    from bsviz.fer.train import load_data

    synth = synth_file(tmp_path / "synth.npz", rig.names)
    plain = cfg(tmp_path, tiny_ck, kind="blendshape", epochs=1, labels=str(tiny_ck / "ck.npz"))
    mixed = cfg(tmp_path, tiny_ck, kind="blendshape", epochs=1, labels=str(tiny_ck / "ck.npz"),
                synth=str(tmp_path / "synth.npz"))
    real, both = load_data(plain), load_data(mixed)
    n = len(real.train)
    assert len(both.train) == n + 20 and len(both.test) == len(real.test)
    torch.testing.assert_close(both.train.images[n:], torch.from_numpy(synth.images / 255).float())
    torch.testing.assert_close(both.train.weights[n:], torch.from_numpy(synth.weights))
    torch.testing.assert_close(both.train.images[:n], real.train.images)
    assert (both.train.labels[n:] == -1).all()
    assert train(mixed)["test_mae"] < 0.5
    with pytest.raises(ValueError, match="only the blendshape stream"):
        TrainConfig(kind="two_stream", synth=str(tmp_path / "synth.npz"))
    synth_file(tmp_path / "other.npz", [f"shape{i}" for i in range(len(rig.names))])
    with pytest.raises(ValueError, match="other shape names"):
        load_data(cfg(tmp_path, tiny_ck, kind="blendshape", labels=str(tiny_ck / "ck.npz"),
                      synth=str(tmp_path / "other.npz")))
