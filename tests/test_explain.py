import numpy as np
import pytest
import torch

from bsviz.fer.explain import (
    ablation_bars,
    class_profiles,
    image_row,
    linear_probe,
    mean_by_class,
    render_poses,
    score_bars,
    stream_ablation,
    top_shape_weights,
    top_shapes,
    two_stream_outputs,
)
from bsviz.fer.models import (
    BlendshapeFERNet,
    TwoStreamConfig,
    blendshape_stream_config,
    image_stream_config,
)

TINY = {"widths": (4, 4, 8, 8, 8, 8, 16), "feature_dim": 8}


@pytest.fixture
def model():
    torch.manual_seed(0)
    cfg = TwoStreamConfig(image_stream_config(3, **TINY), blendshape_stream_config(5, **TINY),
                          n_classes=3)
    return BlendshapeFERNet(cfg).eval()


@pytest.fixture
def images():
    return torch.rand(10, 1, 48, 48, generator=torch.Generator().manual_seed(1)).numpy()


def test_outputs_are_the_model_outputs(model, images):
    out = two_stream_outputs(model, images, batch_size=4)  # batches joined in order
    with torch.no_grad():
        direct = model(torch.from_numpy(images))
    np.testing.assert_allclose(out.logits, direct.logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(out.weights, direct.weights.numpy(), atol=1e-6)
    np.testing.assert_allclose(out.probabilities.sum(axis=1), 1, atol=1e-6)
    assert out.image_features.shape == out.blendshape_features.shape == (10, 8)
    np.testing.assert_array_equal(out.predicted, direct.logits.argmax(1).numpy())


def test_ablation_against_itself_changes_nothing_and_a_dead_stream_matters_not(model, images):
    out = two_stream_outputs(model, images[:1])
    same = stream_ablation(model, out, [0])  # one face, replaced by its own features
    assert np.nansum(same.blendshape_drop) == pytest.approx(0, abs=1e-6)
    assert np.nansum(same.image_drop) == pytest.approx(0, abs=1e-6)
    assert same.n.sum() == 1
    with torch.no_grad():
        model.fusion.weight[:, 8:] = 0  # the fusion ignores F_bs
    out = two_stream_outputs(model, images)
    dead = stream_ablation(model, out, np.ones(10, bool))
    assert np.nanmax(np.abs(dead.blendshape_drop)) < 1e-6 and np.nansum(dead.blendshape_flips) == 0
    assert dead.n.sum() == 10 and np.isnan(dead.image_drop[dead.n == 0]).all()
    with pytest.raises(ValueError, match="empty"):
        stream_ablation(model, out, np.zeros(10, bool))


def test_profiles_find_the_shape_that_marks_a_class():
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1, 2], 20)
    weights = rng.uniform(0, 0.2, (60, 5))
    weights[truth == 1, 3] += 0.7
    predicted = truth.copy()
    predicted[truth == 2] = 0  # class 2 never right
    profiles = class_profiles(weights, predicted, truth, 3)
    assert profiles.shape == (3, 5) and profiles[1].argmax() == 3
    assert np.isnan(profiles[2]).all()
    assert profiles[0, 3] < 0  # relative to the mean of all faces


def test_probe_recovers_which_shape_separates_the_classes():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 300)
    weights = rng.uniform(0, 0.3, (300, 6))
    weights[np.arange(300), targets + 2] += 0.5  # class c raises shape c + 2
    weights[:, 5] = 0.25  # a constant shape
    probe = linear_probe(weights, targets, 3)
    assert probe.agreement(weights, targets) > 0.95
    assert list(probe.coef.argmax(axis=1)) == [2, 3, 4]
    assert np.abs(probe.coef[:, 5]).max() < 1e-3
    fresh = rng.integers(0, 3, 100)
    held_out = rng.uniform(0, 0.3, (100, 6))
    held_out[np.arange(100), fresh + 2] += 0.5
    assert (probe.predict(held_out) == fresh).mean() > 0.95  # generalises to unseen faces


def test_top_shapes_and_the_rig_pose_they_make():
    names = ["a", "b", "c", "d"]
    scores = np.array([[0.1, -0.2, 0.5, 0.3], [np.nan] * 4])
    assert top_shapes(scores, names, 2) == [[("c", 0.5), ("d", 0.3)], []]
    assert top_shapes(scores, names, 4)[0][-1] == ("a", 0.1)  # positive scores only
    base = np.array([0.2, 0.9, 0.4, 0.1])
    pose = top_shape_weights(scores, base, k=3)
    np.testing.assert_allclose(pose[0], [0.5, 0, 1, 0.25])  # top 3 positive, scaled to max 1
    assert (pose[1] == 0).all()
    np.testing.assert_allclose(top_shape_weights(scores, base, k=1, normalise=False)[0],
                               [0, 0, 0.4, 0])


def test_figures():
    scores = np.random.default_rng(0).normal(size=(3, 10))
    scores[2] = np.nan
    fig = score_bars(scores, ["x", "y", "z"], [f"s{i}" for i in range(10)], k=2, title="t")
    assert [ax.get_title() for ax in fig.axes[:3]] == ["x", "y", "z"]
    assert len(fig.axes[0].patches) == 4
    row = image_row([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8))], ["p", "q"])
    assert [ax.get_title() for ax in row.axes] == ["p", "q"]


def test_class_means_and_renders(rig):
    values = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    means = mean_by_class(values, np.array([0, 0, 2]), 3)
    np.testing.assert_allclose(means[[0, 2]], [[2, 1], [5, 5]])
    assert np.isnan(means[1]).all()
    poses = top_shape_weights(np.eye(2, rig.n_shapes), np.full((2, rig.n_shapes), np.nan))
    assert (poses == 0).all()  # a class without faces poses nothing
    pose = np.zeros((2, rig.n_shapes), np.float32)
    pose[1, rig.names.index("jawOpen")] = 1
    neutral, open_jaw = render_poses(rig, pose, size=64, crop=False)
    assert neutral.shape == (64, 64, 3) and (neutral != open_jaw).any()
    face = render_poses(rig, pose[:1], size=100)[0]
    assert face.shape == (50, 50, 3) and (face.min(axis=-1) < 250).mean() > 0.6  # mostly face


def test_ablation_bars(model, images):
    out = two_stream_outputs(model, images)
    fig = ablation_bars(stream_ablation(model, out, np.ones(10, bool)), ["a", "b", "c"])
    assert len(fig.axes) == 2 and len(fig.axes[0].patches) == 6
