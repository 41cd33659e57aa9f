import pytest
import torch

from bsviz.fer.models import (
    BlendshapeFERNet,
    Stream,
    StreamConfig,
    TwoStreamConfig,
    blendshape_loss,
    blendshape_stream_config,
    expression_loss,
    image_stream_config,
)

SMALL = {"widths": (4, 4, 8, 8, 8, 8, 16), "feature_dim": 12}


def test_stream_shapes_and_ranges():
    images = torch.rand(5, 1, 48, 48)
    image = Stream(image_stream_config(7, **SMALL)).eval()(images)
    assert image.features.shape == (5, 12) and image.logits.shape == (5, 7) and image.weights is None
    bs = Stream(blendshape_stream_config(53, **SMALL)).eval()(images)
    assert bs.weights.shape == (5, 53) and (bs.weights >= 0).all() and (bs.weights <= 1).all()
    assert bs.logits is None
    convs = [m for m in Stream(image_stream_config(7, **SMALL)).modules()
             if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in Stream(image_stream_config(7, **SMALL)).modules()
               if isinstance(m, torch.nn.Linear)]
    assert len(convs) == 7 and len(linears) == 2  # the paper's 7 conv + 2 FC


def test_two_stream_fuses_first_fc_features():
    cfg = TwoStreamConfig(image_stream_config(7, **SMALL), blendshape_stream_config(53, **SMALL))
    net = BlendshapeFERNet(cfg).eval()
    images = torch.rand(3, 1, 48, 48)
    out = net(images)
    assert out.logits.shape == (3, 7) and out.weights.shape == (3, 53)
    # O_con = h_con([F_img, F_bs]) (eqs. 6-7), recomputed by hand
    f_con = torch.cat([net.image(images).features, net.blendshape(images).features], dim=1)
    torch.testing.assert_close(out.logits, net.fusion(f_con))


def test_losses_match_the_equations():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2])
    p = torch.softmax(logits, dim=1)
    expected = -(torch.log(p[0, 0]) + torch.log(p[1, 2])) / 2  # eq. 3
    torch.testing.assert_close(expression_loss(logits, labels), expected)
    o = torch.tensor([[0.5, 0.5], [0.0, 1.0], [0.2, 0.2]])
    g = torch.tensor([[1.0, 0.5], [0.0, 0.0], [float("nan"), float("nan")]])
    mask = torch.tensor([True, True, False])
    # eq. 5 over the n = 2 labelled images: (0.25 + 1) / (2 * 2)
    assert blendshape_loss(o, g, mask).item() == pytest.approx(1.25 / 4)
    assert blendshape_loss(o[2:], g[2:], mask[2:]).item() == 0.0


def test_config_checks():
    with pytest.raises(ValueError, match="7 convolution layers"):
        image_stream_config(7, widths=(8, 8))
    with pytest.raises(ValueError, match="output must be"):
        StreamConfig(output="softmax")
