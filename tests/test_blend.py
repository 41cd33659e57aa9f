import numpy as np
import pytest
import torch
from conftest import obj_vertices

from bsviz.rig.blend import (SAFE_BOUND, WeightError, WeightRangeWarning, blend, check_vertices,
                             weight_vector)
from bsviz.rig.layer import BlendLayer
from bsviz.rig.rig import Rig


@pytest.mark.parametrize("shape", ["jawOpen", "mouthSmile_L", "eyeBlink_L"])
def test_single_shape_reproduces_its_obj(rig, ict_dir, shape):
    expected = obj_vertices(ict_dir / f"{shape}.obj")
    np.testing.assert_allclose(blend(rig, {shape: 1.0}), expected, atol=1e-4)


def test_half_weight_is_halfway(rig, ict_dir):
    expected = (obj_vertices(ict_dir / "jawOpen.obj") + rig.neutral) / 2
    np.testing.assert_allclose(blend(rig, {"jawOpen": 0.5}), expected, atol=1e-4)


def test_array_and_dict_agree_and_batch_shapes(rig):
    w = np.zeros(rig.n_shapes, np.float32)
    w[rig.names.index("mouthSmile_R")] = 0.3
    np.testing.assert_array_equal(blend(rig, w), blend(rig, {"mouthSmile_R": 0.3}))
    batch = np.random.default_rng(0).random((2, 3, rig.n_shapes), dtype=np.float32)
    out = blend(rig, batch)
    assert out.shape == (2, 3, rig.n_vertices, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[1, 2], blend(rig, batch[1, 2]), atol=1e-5)


def test_blend_is_the_linear_sum_of_deltas(rig):
    w = np.random.default_rng(1).random(rig.n_shapes, dtype=np.float32)
    expected = rig.neutral + np.einsum("k,kvc->vc", w.astype(np.float64), rig.deltas)
    np.testing.assert_allclose(blend(rig, w), expected, atol=1e-4)


def test_identity_weights(rig):
    out = blend(rig, {}, identity={"identity003": 1.0})
    np.testing.assert_allclose(out, rig.neutral + rig.identity_deltas[3], atol=1e-5)
    both = blend(rig, {"jawOpen": 1.0}, identity={"identity003": -2.0})  # identity: unbounded
    expected = rig.neutral + rig.deltas[rig.names.index("jawOpen")] - 2 * rig.identity_deltas[3]
    np.testing.assert_allclose(both, expected, atol=1e-4)


@pytest.mark.parametrize("weights, message", [
    ({"jawOpn": 1.0}, "unknown expression shape name"),
    (np.zeros(52), "length 53"),
    ({"jawOpen": float("nan")}, "NaN"),
    (np.full(53, np.inf), "NaN or inf"),
])
def test_bad_weights_raise(rig, weights, message):
    with pytest.raises(WeightError, match=message):
        blend(rig, weights)


def test_out_of_range_is_clamped_with_a_warning_unless_extrapolating(rig):
    with pytest.warns(WeightRangeWarning):
        clamped = blend(rig, {"jawOpen": 2.0})
    np.testing.assert_array_equal(clamped, blend(rig, {"jawOpen": 1.0}))
    extrapolated = blend(rig, {"jawOpen": 2.0}, extrapolate=True)
    np.testing.assert_allclose(extrapolated - rig.neutral,
                               2 * rig.deltas[rig.names.index("jawOpen")], atol=1e-4)


def test_torch_layer_agrees_with_numpy(rig):
    layer = BlendLayer(rig)
    w = np.random.default_rng(2).random((4, rig.n_shapes), dtype=np.float32)
    wid = np.random.default_rng(3).standard_normal((4, 10)).astype(np.float32)
    ours = layer(torch.from_numpy(w), torch.from_numpy(wid)).numpy()
    np.testing.assert_allclose(ours, blend(rig, w, identity=wid), atol=1e-4)
    assert layer.state_dict() == {}  # the rig is not model state


def test_torch_layer_equals_numpy_with_and_without_out(rig):
    layer = BlendLayer(rig)
    w = np.random.default_rng(5).random((3, rig.n_shapes), dtype=np.float32)
    wid = np.random.default_rng(6).standard_normal(10).astype(np.float32)
    out = torch.full((3, rig.n_vertices, 3), float("nan"))
    for identity in (None, wid):
        expected = blend(rig, w, identity)
        tid = None if identity is None else torch.from_numpy(identity)
        np.testing.assert_allclose(layer(torch.from_numpy(w), tid).numpy(), expected, atol=1e-5,
                                   rtol=0)
        assert layer(torch.from_numpy(w), tid, out=out) is out
        np.testing.assert_allclose(out.numpy(), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(layer(torch.from_numpy(w[0])).numpy(), blend(rig, w[0]), atol=1e-5)
    with pytest.raises(ValueError, match="contiguous torch.float32 tensor of shape"):
        layer(torch.from_numpy(w), out=torch.empty(2, rig.n_vertices, 3))


def test_out_is_refused_when_gradients_are_needed(rig):
    layer = BlendLayer(rig)
    w = torch.full((1, rig.n_shapes), 0.5, requires_grad=True)
    with pytest.raises(ValueError, match="out= is for inference"):
        layer(w, out=torch.empty(1, rig.n_vertices, 3))
    with torch.no_grad():  # no gradients asked for: out= is fine
        layer(w, out=torch.empty(1, rig.n_vertices, 3))


def test_torch_gradients_flow_and_are_the_deltas(rig):
    layer = BlendLayer(rig)
    w = torch.full((1, rig.n_shapes), 0.5, requires_grad=True)
    layer(w).sum().backward()
    # d/dw_k sum_vc T = sum_vc d_k[v, c]
    expected = rig.deltas.astype(np.float64).sum(axis=(1, 2))
    np.testing.assert_allclose(w.grad[0].numpy(), expected, rtol=1e-3, atol=1e-2)


def test_torch_layer_checks_inputs(rig):
    layer = BlendLayer(rig)
    with pytest.raises(WeightError, match="length 53"):
        layer(torch.zeros(1, 52))
    with pytest.raises(WeightError, match="NaN"):
        layer(torch.full((1, 53), float("nan")))
    with pytest.warns(WeightRangeWarning):
        out = layer(torch.full((1, 53), 1.5))
    torch.testing.assert_close(out, layer(torch.ones(1, 53)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_torch_layer_on_cuda(rig):
    layer = BlendLayer(rig).cuda()
    w = torch.rand(8, rig.n_shapes)
    torch.testing.assert_close(layer(w.cuda()).cpu(), BlendLayer(rig)(w), atol=1e-4, rtol=0)


def test_weight_vector_fills_missing_names_with_zero(rig):
    w = weight_vector({"jawOpen": 0.7}, rig.names)
    assert w.shape == (53,) and w.sum() == pytest.approx(0.7)


def test_blend_into_a_given_array(rig):
    w = np.random.default_rng(4).random((3, rig.n_shapes), dtype=np.float32)
    out = np.empty((3, rig.n_vertices, 3), np.float32)
    assert blend(rig, w, out=out) is out
    np.testing.assert_allclose(out, blend(rig, w), atol=1e-5)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        blend(rig, w, out=np.empty((2, rig.n_vertices, 3), np.float32))


def test_weights_that_overflow_float32_are_refused(rig):
    """An identity weight of 3e38 is finite in float32 but its vertices are not."""
    with pytest.raises(WeightError, match="NaN or inf vertices"):
        blend(rig, {}, {"identity000": 3e38})
    with pytest.raises(WeightError, match="NaN or inf vertices"):
        blend(rig, np.zeros((2, 53)), np.full((2, 10), 3e38), out=np.empty((2, rig.n_vertices, 3),
                                                                            np.float32))
    with pytest.raises(WeightError, match="NaN or inf vertices"):
        BlendLayer(rig)(torch.zeros(1, 53), torch.full((1, 10), 3e38))
    with pytest.raises(WeightError, match="NaN or inf vertices"):
        BlendLayer(rig)(torch.zeros(1, 53), torch.full((1, 10), 3e38),
                        out=torch.empty(1, rig.n_vertices, 3))
    assert torch.isfinite(BlendLayer(rig)(torch.zeros(1, 53), torch.full((10,), 1e38))).all()
    big = blend(rig, {}, {"identity000": 1e38})  # huge but finite: blended, the sum overflowing
    with np.errstate(over="ignore", invalid="ignore"):
        assert np.isfinite(big).all() and not np.isfinite(big.sum())


def test_the_overflow_bound_is_sound_where_vertices_are_no_longer_scanned(rig):
    """check_vertices skips its scan when max|coeff| * sum_k max|basis[k]| < SAFE_BOUND."""
    layer = BlendLayer(rig, extrapolate=True)
    assert layer.basis_max_sum == pytest.approx(np.abs(rig.basis).max(axis=1).sum())
    w = np.random.default_rng(7).uniform(-1e3, 1e3, (4, rig.n_shapes)).astype(np.float32)
    vertices = layer(torch.from_numpy(w), torch.full((10,), 1e3)).numpy()
    assert np.abs(vertices).max() <= 1e3 * layer.basis_max_sum
    # A rig whose 4 shapes all move one vertex by +1 cm reaches the bound exactly: T = 4 c.
    ones = Rig(np.zeros((3, 3)), [[0, 1, 2]], list("abcd"), np.ones((4, 3, 3)))
    tight = BlendLayer(ones, extrapolate=True)
    assert tight.basis_max_sum == 4
    below = tight(torch.full((1, 4), 0.999 * SAFE_BOUND / 4))  # not scanned: finite as proved
    assert torch.isfinite(below).all() and below.max() == pytest.approx(0.999 * SAFE_BOUND)
    assert torch.isfinite(tight(torch.full((1, 4), 1.5 * SAFE_BOUND / 4))).all()  # scanned
    with pytest.raises(WeightError, match="NaN or inf vertices"):
        tight(torch.full((1, 4), 2.1 * SAFE_BOUND / 4))
    skipped = np.array([np.nan, np.inf])  # below the bound nothing is looked at
    check_vertices(skipped, SAFE_BOUND / 2)
    with pytest.raises(WeightError):
        check_vertices(skipped, SAFE_BOUND)


@pytest.mark.parametrize("n_shapes", [2, 0])
def test_rig_without_identity_shapes_blends_in_numpy_and_torch(rig, n_shapes):
    bare = Rig(rig.neutral, rig.triangles, rig.names[:n_shapes], rig.deltas[:n_shapes])
    w = np.array([[0.5, 1.0][:n_shapes]] * 3, np.float32)
    expected = rig.neutral + np.einsum("k,kvc->vc", w[0], rig.deltas[:n_shapes])
    ours = blend(bare, w)
    assert ours.shape == (3, rig.n_vertices, 3)
    np.testing.assert_allclose(ours[1], expected, atol=1e-5)
    np.testing.assert_allclose(BlendLayer(bare)(torch.from_numpy(w)).numpy(), ours, atol=1e-5)
    np.testing.assert_allclose(blend(bare, {}, {}), rig.neutral, atol=1e-6)
