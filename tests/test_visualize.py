"""Visualisation: exact colours and blends, class filters, upscaling, legend and HUD."""
import cv2
import numpy as np
import pytest

from fcn_deploy.errors import FcnDeployError
from fcn_deploy.runtime.visualize import HudStats, VisualOptions, Visualizer, resolve_classes

pytestmark = pytest.mark.runtime  # needs no PyTorch: .ci/jetson-env runs it on Python 3.8 and 3.10

NAMES = ["sky", "road", "car", "person"]
PALETTE = [(128, 128, 128), (128, 64, 128), (64, 0, 128), (220, 20, 60)]  # RGB


def scene(h=60, w=80):
    y, x = np.mgrid[0:h, 0:w]
    frame = np.stack([x * 3 % 256, y * 4 % 256, (x + y) % 256], -1).astype(np.uint8)
    labels = np.zeros((h, w), np.uint8)
    labels[h // 2:] = 1
    labels[h // 2:, w // 2:] = 2
    labels[:10, :10] = 3
    return frame, labels


def plain(**options):
    return Visualizer(NAMES, PALETTE, VisualOptions(legend=False, hud=False, **options))


def bgr(index):
    r, g, b = PALETTE[index]
    return np.array([b, g, r], np.uint8)


def test_colorize_uses_the_palette_in_bgr_and_black_for_unknown_labels():
    v = plain()
    labels = np.array([[0, 1, 2, 3, 200]], np.uint8)
    colours = v.colorize(labels)
    for i in range(4):
        np.testing.assert_array_equal(colours[0, i], bgr(i))
    np.testing.assert_array_equal(colours[0, 4], [0, 0, 0])


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_overlay_is_an_alpha_blend(alpha):
    frame, labels = scene()
    out = plain(alpha=alpha).render(frame, labels)
    expected = frame * (1 - alpha) + plain().colorize(labels) * alpha
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.abs(out.astype(float) - expected).max() <= 1.0


def test_mask_and_side_by_side():
    frame, labels = scene()
    mask = plain(mode="mask").render(frame, labels)
    np.testing.assert_array_equal(mask, plain().colorize(labels))
    sbs = plain(mode="side-by-side").render(frame, labels)
    assert sbs.shape == (60, 160, 3)
    np.testing.assert_array_equal(sbs[:, :80], frame)
    np.testing.assert_array_equal(sbs[:, 80:], mask)


def test_ignore_and_classes_filters_by_name_or_index():
    frame, labels = scene()
    out = plain(ignore=["road"]).render(frame, labels)
    road = labels == 1
    np.testing.assert_array_equal(out[road], frame[road])  # not drawn: the camera pixel
    assert not np.array_equal(out[labels == 2], frame[labels == 2])

    v = plain(classes=["car", "3"], mode="mask")
    assert v.drawn == [2, 3]
    mask = v.render(frame, labels)
    assert (mask[labels <= 1] == 0).all()
    np.testing.assert_array_equal(mask[labels == 2][0], bgr(2))

    assert plain(classes=["car", "person"], ignore=["PERSON"]).drawn == [2]
    assert resolve_classes(["2", "Sky", ""], NAMES) == [0, 2]
    with pytest.raises(FcnDeployError, match="unknown class 'bus'"):
        resolve_classes(["bus"], NAMES)
    with pytest.raises(FcnDeployError, match="out of range"):
        plain(ignore=["9"])


def test_nearest_upscaling_keeps_exact_classes_linear_smooths_colours():
    frame, _ = scene(64, 96)
    small = np.zeros((16, 24), np.uint8)
    small[:, 12:] = 1
    nearest = plain(mode="mask", upscale="nearest").render(frame, small)
    assert nearest.shape == (64, 96, 3)
    colours = {tuple(c) for c in nearest.reshape(-1, 3)}
    assert colours == {tuple(bgr(0)), tuple(bgr(1))}
    np.testing.assert_array_equal(nearest[:, :48], np.broadcast_to(bgr(0), (64, 48, 3)))

    linear = plain(mode="mask", upscale="linear").render(frame, small)
    assert linear.shape == (64, 96, 3)
    assert len({tuple(c) for c in linear.reshape(-1, 3)}) > 2  # blended edge between the classes
    np.testing.assert_array_equal(linear[:, :40], nearest[:, :40])  # away from the edge: the same

    # Filtered classes upscale too: the ignored class stays the camera pixel.
    out = plain(upscale="linear", ignore=["sky"]).render(frame, small)
    np.testing.assert_array_equal(out[:, :40], frame[:, :40])


def test_legend_lists_the_drawn_classes_and_the_hud_draws_text():
    frame, labels = scene(240, 320)
    bare = plain().render(frame, labels)
    with_legend = Visualizer(NAMES, PALETTE, VisualOptions(hud=False)).render(frame, labels)
    changed = np.any(with_legend != bare, axis=2)
    ys, xs = np.nonzero(changed)
    assert ys.max() < 120 and xs.max() < 160  # a panel in the top-left corner only
    v = Visualizer(NAMES, PALETTE, VisualOptions(ignore=["sky"]))
    assert v.legend_panel(240).shape[0] < Visualizer(NAMES, PALETTE).legend_panel(240).shape[0]

    with_hud = Visualizer(NAMES, PALETTE, VisualOptions(legend=False)).render(frame, labels, HudStats(25.0, 40, 30))
    changed = np.any(with_hud != bare, axis=2)
    ys, _ = np.nonzero(changed)
    assert ys.min() > 180  # along the bottom edge
    assert Visualizer(NAMES, PALETTE).render(frame, labels, None).shape == frame.shape


def test_bad_options_are_clear_errors():
    with pytest.raises(FcnDeployError, match="mode"):
        VisualOptions(mode="blend")
    with pytest.raises(FcnDeployError, match="alpha"):
        VisualOptions(alpha=1.5)
    with pytest.raises(FcnDeployError, match="upscaling"):
        VisualOptions(upscale="cubic")
    with pytest.raises(FcnDeployError, match="palette"):
        Visualizer(NAMES, PALETTE[:2])


def test_render_cost_is_small():
    """Rendering must stay far below a model's frame time (here: a CamVid-sized frame)."""
    import time

    frame = cv2.resize(scene()[0], (480, 360))
    labels = cv2.resize(scene()[1], (480, 360), interpolation=cv2.INTER_NEAREST)
    v = Visualizer(NAMES, PALETTE)
    v.render(frame, labels, HudStats())
    start = time.perf_counter()
    for _ in range(20):
        v.render(frame, labels, HudStats())
    assert (time.perf_counter() - start) / 20 < 0.02  # generous: about 1 ms on 2 cores


def test_hud_shows_no_rate_before_there_is_one():
    """The first frame of a stream has no FPS yet: the HUD says "--", not "0.0 FPS"."""
    assert HudStats().text().startswith("   -- FPS")
    assert "0.0 FPS" not in HudStats(latency_ms=40, inference_ms=30).text()
    assert HudStats(25.0, 40, 30).text() == " 25.0 FPS  latency   40 ms  model   30 ms"
    assert HudStats(fps=12.5, title="front").text().startswith("[front]  12.5 FPS")
