"""The explorer driven without a browser: sliders, link, presets, search, heatmap, exports.

Expected faces are computed from the rig's arrays directly (b0 + w * d_k), not through the
explorer, and exports are read back with readers independent of the writer's code path.
"""

import json

import numpy as np
import pytest
import trimesh

from bsviz.rig.blend import WeightError
from bsviz.rig.obj import read_obj
from bsviz.ui import explorer as explorer_module
from bsviz.ui.explorer import BlendshapeExplorer, load_presets, lr_pairs, snap

HAPPY = {"mouthSmile_L": 0.8, "mouthSmile_R": 0.7, "cheekSquint_L": 0.25}


@pytest.fixture
def explorer(rig, tmp_path):
    return BlendshapeExplorer(rig, presets={"happy": HAPPY}, out_dir=tmp_path / "out")


@pytest.fixture
def draws(monkeypatch):
    """Counts the in-place figure updates the explorer makes."""
    calls = []
    real = explorer_module.set_vertices
    monkeypatch.setattr(explorer_module, "set_vertices", lambda *a: (calls.append(1), real(*a)))
    return calls


def face(rig, weights):
    """b0 + sum_k w_k d_k from the rig's arrays, in float64."""
    out = rig.neutral.astype(np.float64)
    for name, value in weights.items():
        out = out + value * rig.deltas[rig.names.index(name)]
    return out


def figure_vertices(explorer):
    mesh = explorer.figure.data[0]
    return np.stack([np.asarray(mesh.x), np.asarray(mesh.y), np.asarray(mesh.z)], axis=1)


def test_slider_moves_the_figure_in_place(rig, explorer, draws):
    trace = explorer.figure.data[0]
    np.testing.assert_allclose(figure_vertices(explorer), rig.neutral)
    explorer.sliders["jawOpen"].value = 0.7
    assert explorer.figure.data[0] is trace and len(draws) == 1
    np.testing.assert_allclose(figure_vertices(explorer), face(rig, {"jawOpen": 0.7}), atol=1e-5)
    np.testing.assert_allclose(explorer.current_vertices(), face(rig, {"jawOpen": 0.7}), atol=1e-5)


def test_identity_slider_changes_the_face(rig, explorer):
    explorer.identity_sliders["identity003"].value = -1.5
    k = rig.identity_names.index("identity003")
    expected = rig.neutral - 1.5 * rig.identity_deltas[k]
    np.testing.assert_allclose(figure_vertices(explorer), expected, atol=1e-5)


def test_lr_link_moves_the_partner_once(rig, explorer, draws):
    assert explorer.link.value
    explorer.sliders["mouthSmile_L"].value = 0.6
    assert explorer.sliders["mouthSmile_R"].value == 0.6 and len(draws) == 1
    explorer.sliders["eyeBlink_R"].value = 0.3
    assert explorer.sliders["eyeBlink_L"].value == 0.3 and len(draws) == 2
    np.testing.assert_allclose(figure_vertices(explorer), face(rig, {
        "mouthSmile_L": 0.6, "mouthSmile_R": 0.6, "eyeBlink_L": 0.3, "eyeBlink_R": 0.3}), atol=1e-5)
    explorer.link.value = False
    explorer.sliders["mouthSmile_L"].value = 0.1
    assert explorer.sliders["mouthSmile_R"].value == 0.6


def test_lr_pairs_are_sides_not_directions(rig):
    pairs = lr_pairs(rig.names)
    assert pairs["browDown_L"] == "browDown_R" and pairs["browDown_R"] == "browDown_L"
    assert "jawLeft" not in pairs and "mouthLeft" not in pairs and "jawOpen" not in pairs
    assert len(pairs) == sum(n.endswith(("_L", "_R")) for n in rig.names)


def test_reset_restores_the_neutral(rig, explorer, draws):
    explorer.set_weights({"jawOpen": 0.5, "browDown_L": 1.0, "identity000": 1.0})
    explorer.reset()
    assert set(explorer.weights().values()) == {0.0} and set(explorer.identity().values()) == {0.0}
    np.testing.assert_array_equal(explorer.current_vertices(), rig.neutral)
    np.testing.assert_allclose(figure_vertices(explorer), rig.neutral)
    assert len(draws) == 2  # one per set_weights / reset, not one per slider


def test_preset_sets_its_weights(rig, explorer):
    assert explorer.preset.options == ("neutral", "happy")
    explorer.set_weights({"jawOpen": 0.4, "identity001": 0.5})
    explorer.preset.value = "happy"
    assert {n: v for n, v in explorer.weights().items() if v} == HAPPY
    assert explorer.identity()["identity001"] == 0.5  # a preset is an expression, not a person
    explorer.preset.value = "neutral"
    assert set(explorer.weights().values()) == {0.0}


def test_presets_file_missing_or_bad(rig, tmp_path):
    assert load_presets(tmp_path / "missing.json") == {}
    (tmp_path / "presets.json").write_text(json.dumps({"happy": HAPPY}))
    assert load_presets(tmp_path / "presets.json") == {"happy": HAPPY}
    assert BlendshapeExplorer(rig, presets={}).preset.options == ("neutral",)
    with pytest.raises(WeightError, match="notAShape"):
        BlendshapeExplorer(rig, presets={"odd": {"notAShape": 1.0}})


def test_search_filters_sliders(explorer):
    explorer.search.value = "Smile"
    shown = [n for n, s in {**explorer.sliders, **explorer.identity_sliders}.items()
             if s.layout.display != "none"]
    assert shown == ["mouthSmile_L", "mouthSmile_R"]
    assert "mouth (2)" in explorer.regions.titles and "brows (0)" in explorer.regions.titles
    explorer.search.value = ""
    assert all(s.layout.display != "none" for s in explorer.sliders.values())
    assert "mouth" in explorer.regions.titles


def test_heatmap_shows_the_displacement(rig, explorer):
    explorer.heatmap.value = True
    explorer.sliders["jawOpen"].value = 0.9
    expected = np.linalg.norm(face(rig, {"jawOpen": 0.9}) - rig.neutral, axis=1)
    np.testing.assert_allclose(np.asarray(explorer.figure.data[0].intensity), expected, atol=1e-5)
    explorer.heatmap.value = False
    assert explorer.figure.data[0].intensity is None
    np.testing.assert_allclose(figure_vertices(explorer), face(rig, {"jawOpen": 0.9}), atol=1e-5)


def test_mesh_exports_reload_with_the_current_face(rig, explorer):
    explorer.set_weights({"jawOpen": 0.5, "mouthFunnel": 0.3})
    expected = face(rig, {"jawOpen": 0.5, "mouthFunnel": 0.3})
    explorer.export_buttons["OBJ"].click()
    path = explorer.out_dir / "face.obj"
    assert explorer.status.value == f"wrote {path}"
    obj = read_obj(path)
    np.testing.assert_allclose(obj.vertices, expected, atol=1e-4)
    np.testing.assert_array_equal(obj.triangles, rig.visible_triangles())
    glb = trimesh.load(explorer.export_mesh(".glb"), process=False, force="mesh")
    np.testing.assert_allclose(glb.vertices * 100, expected, atol=1e-4)  # GLB is in metres


def test_export_failure_goes_to_the_status_line(explorer):
    explorer.out_dir.parent.mkdir(exist_ok=True)
    explorer.out_dir.write_text("a file, not a folder")
    explorer.export_buttons["GLB"].click()
    assert explorer.status.value.startswith("export failed")


def test_weights_json_round_trips(rig, explorer, tmp_path):
    weights = {"jawOpen": 0.35, "eyeBlink_L": 1.0, "identity002": -0.75}
    explorer.set_weights(weights)
    explorer.file_name.value = "mine"
    explorer.export_buttons["weights"].click()
    saved = json.loads((explorer.out_dir / "mine.json").read_text())
    assert saved == {**explorer.weights(), **explorer.identity()}
    assert {n: v for n, v in saved.items() if v} == weights
    other = BlendshapeExplorer(rig, presets={})
    other.set_weights(saved)
    assert other.weights() == explorer.weights() and other.identity() == explorer.identity()
    np.testing.assert_array_equal(other.current_vertices(), explorer.current_vertices())
    with pytest.raises(WeightError, match="notAShape"):
        other.set_weights({"notAShape": 1.0})
    with pytest.raises(WeightError, match="NaN"):
        other.set_weights({"jawOpen": float("nan")})
    assert other.weights() == explorer.weights()  # a refused dict changes nothing


def test_snap_is_the_browsers_arithmetic(explorer):
    jaw, identity = explorer.sliders["jawOpen"], explorer.identity_sliders["identity000"]
    assert [snap(v, jaw) for v in (0.4529, 0.4698, 0.0358, 0.2079, 0.125, -1.0, 3.0)] == [
        0.45, 0.47, 0.04, 0.21, 0.13, 0.0, 1.0]  # halves up, as JavaScript's Math.round
    assert snap(0.57, jaw) == 0.57  # 57 / 100, where 57 * 0.01 would be 0.5700000000000001
    assert snap(0.05, identity) == 2.05 - 2  # the browser's 0.04999999999999982, not 0.05
    values = np.random.default_rng(0).uniform(-2.5, 2.5, 2000)
    for slider in (jaw, identity):  # a snapped value is left alone: the browser sends nothing
        snapped = [snap(v, slider) for v in values]
        assert [snap(v, slider) for v in snapped] == snapped


def test_values_from_code_land_on_the_sliders_steps(explorer, draws):
    explorer.set_weights({"browDown_L": 0.4529, "browDown_R": 0.4698, "identity001": 0.33})
    assert explorer.weights()["browDown_L"] == 0.45 and explorer.weights()["browDown_R"] == 0.47
    assert explorer.identity()["identity001"] == snap(0.35, explorer.identity_sliders["identity001"])
    assert len(draws) == 1  # the link left the other side alone


def test_a_preset_redraws_once_and_the_link_leaves_it_alone(rig, tmp_path, draws):
    uneven = {"browDown_L": 0.4529, "browDown_R": 0.4698, "eyeBlink_L": 0.2079, "jawOpen": 0.0132}
    explorer = BlendshapeExplorer(rig, presets={"anger": uneven}, out_dir=tmp_path)
    assert explorer.link.value
    explorer.preset.value = "anger"
    assert {n: v for n, v in explorer.weights().items() if v} == {
        "browDown_L": 0.45, "browDown_R": 0.47, "eyeBlink_L": 0.21, "jawOpen": 0.01}
    assert len(draws) == 1
    np.testing.assert_allclose(figure_vertices(explorer), face(rig, explorer.weights()), atol=1e-5)


def test_the_browser_echoing_a_value_changes_nothing(explorer, draws):
    explorer.set_weights({"mouthSmile_L": 0.3, "mouthSmile_R": 0.7})
    slider = explorer.sliders["mouthSmile_L"]
    slider.set_state({"value": slider.value})  # what a front end sends back for a snapped value
    assert explorer.sliders["mouthSmile_R"].value == 0.7 and len(draws) == 1
    slider.set_state({"value": 0.5})  # the user moving the slider in the browser
    assert explorer.sliders["mouthSmile_R"].value == 0.5 and len(draws) == 2


def test_the_face_has_eyes_and_teeth(rig, explorer):
    shown = np.asarray(explorer.figure.data[0].vertexcolor)
    assert len(shown) == rig.n_vertices
    rgb = np.array([c[4:-1].split(",") for c in shown], int)  # "rgb(r,g,b)"
    part = {n: rgb[np.unique(rig.triangles[rig.triangle_groups == g])]
            for g, n in enumerate(rig.group_names)}
    for eye in ("M_ScleraLeft", "M_ScleraRight"):
        light = part[eye].min(axis=1)
        assert (light > 200).mean() > 0.5  # mostly white
        assert ((light < 20).sum() > 5) and (np.ptp(part[eye], axis=1) > 30).sum() > 20  # pupil, iris
    teeth, skin = ({tuple(c) for c in part[n]} for n in ("M_Teeth", "M_Face"))
    assert min(min(c) for c in teeth) > 200 and not teeth & skin
    explorer.heatmap.value = True
    explorer.heatmap.value = False
    assert list(explorer.figure.data[0].vertexcolor) == list(shown)
