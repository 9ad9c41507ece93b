"""Dataset readers on small data written by the tests in each real on-disk format."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fcn_deploy.data import available_datasets, build_dataset, read_index_png
from fcn_deploy.data.cityscapes import CITYSCAPES_EVAL_IDS
from fcn_deploy.data.class_weights import class_pixel_frequencies, median_frequency_weights
from fcn_deploy.data.transforms import Compose, RandomCrop, RandomHorizontalFlip, RandomScale
from fcn_deploy.data.voc import VOC_PALETTE
from fcn_deploy.errors import FcnDeployError

pytestmark = pytest.mark.runtime  # needs no PyTorch: .ci/jetson-env runs it on Python 3.8 and 3.10

# The real dataset sits next to the repository (../shared); tests never need it.
REAL_CAMVID = (Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "CamVid").resolve()


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


def write_gray(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label.astype(np.uint8), mode="L").save(path)


def write_palette(path: Path, label: np.ndarray, palette) -> None:
    """A 'P' mode PNG whose colour table differs from the indices, as VOC's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(label.astype(np.uint8), mode="P")
    flat = [0] * 768
    for i, colour in enumerate(palette):
        flat[3 * i:3 * i + 3] = colour
    flat[765:768] = (224, 224, 192)  # VOC's colour for 255, the boundary band
    image.putpalette(flat)
    image.save(path)


def random_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def blocky_label(rng: np.random.Generator, h: int, w: int, values) -> np.ndarray:
    """Labels in 4x4 blocks so that JPEG / scaling artefacts cannot matter."""
    small = rng.choice(np.asarray(values), size=((h + 3) // 4, (w + 3) // 4))
    return np.kron(small, np.ones((4, 4), np.int64))[:h, :w].astype(np.int64)


# ---------------------------------------------------------------- PASCAL VOC (+ SBD)


def make_voc(root: Path, rng: np.random.Generator, splits: dict) -> dict:
    """VOCdevkit/VOC2012 with palette labels with a 255 border; returns name -> label."""
    voc = root / "VOCdevkit" / "VOC2012"
    labels = {}
    names = sorted({n for ns in splits.values() for n in ns})
    for i, name in enumerate(names):
        h, w = 20 + 4 * i, 28
        label = blocky_label(rng, h, w, [0, 1, 15, 20])
        label[0, :] = label[-1, :] = label[:, 0] = label[:, -1] = 255
        write_rgb(voc / "JPEGImages" / f"{name}.jpg", random_image(rng, h, w))
        write_palette(voc / "SegmentationClass" / f"{name}.png", label, VOC_PALETTE)
        labels[name] = label
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    for split, ns in splits.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{n}\n" for n in ns))
    return labels


def test_cv2_would_read_voc_palette_pngs_as_colours(tmp_path):
    # Why labels go through Pillow: OpenCV returns the palette colours of a 'P' PNG.
    label = np.array([[0, 1], [15, 255]])
    write_palette(tmp_path / "l.png", label, VOC_PALETTE)
    assert cv2.imread(str(tmp_path / "l.png"), cv2.IMREAD_UNCHANGED).ndim == 3
    np.testing.assert_array_equal(read_index_png(tmp_path / "l.png"), label)


def test_voc_reads_palette_indices_and_ignore_border(tmp_path):
    labels = make_voc(tmp_path, np.random.default_rng(0), {"train": ["a", "b"], "val": ["c"]})
    for root in (tmp_path, tmp_path / "VOCdevkit", tmp_path / "VOCdevkit" / "VOC2012"):
        ds = build_dataset("voc", root, "train")
        assert len(ds) == 2 and ds.num_classes == 21 and ds.ignore_index == 255
    assert ds.classes[15] == "person" and ds.palette[1] == (128, 0, 0)
    image, label = ds[1]
    assert image.dtype == np.uint8 and image.shape == labels["b"].shape + (3,)
    assert label.dtype == np.int64
    np.testing.assert_array_equal(label, labels["b"])
    assert (label[0] == 255).all() and set(np.unique(label)) <= {0, 1, 15, 20, 255}
    assert ds.image_path(0).endswith("JPEGImages/a.jpg") and ds.name(0) == "a"
    assert len(build_dataset("voc", tmp_path, "val")) == 1


def write_sbd_mat(path: Path, segmentation: np.ndarray) -> None:
    """cls/NAME.mat as SBD ships it: struct GTcls with Boundaries, Segmentation, CategoriesPresent."""
    from scipy import sparse
    from scipy.io import savemat

    boundaries = np.empty((20, 1), dtype=object)
    for k in range(20):
        boundaries[k, 0] = sparse.csc_matrix(segmentation == k + 1, dtype=np.float64)
    present = np.unique(segmentation[(segmentation > 0) & (segmentation < 255)]).astype(np.uint8)[:, None]
    gtcls = {"Boundaries": boundaries, "Segmentation": segmentation.astype(np.uint8), "CategoriesPresent": present}
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"GTcls": gtcls})


def test_voc_aug_train_aug_split_with_sbd_mat(tmp_path):
    pytest.importorskip("scipy")
    rng = np.random.default_rng(1)
    voc_labels = make_voc(tmp_path, rng, {"train": ["a", "b"], "val": ["c"]})
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    sbd_labels = {}
    for name in ["b", "c", "d", "e"]:  # c is VOC val: must be left out of train_aug
        seg = blocky_label(rng, 24, 32, [0, 3, 7, 20])
        write_sbd_mat(sbd / "cls" / f"{name}.mat", seg)
        write_rgb(sbd / "img" / f"{name}.jpg", random_image(rng, 24, 32))
        sbd_labels[name] = seg
    (sbd / "train.txt").write_text("b\nd\n")
    (sbd / "val.txt").write_text("c\ne\n")

    ds = build_dataset("voc_aug", tmp_path, "train")
    assert [ds.name(i) for i in range(len(ds))] == ["a", "b", "d", "e"]
    assert ds.label_path(1).endswith("SegmentationClass/b.png")  # VOC's own label wins
    np.testing.assert_array_equal(ds[1][1], voc_labels["b"])
    image, label = ds[2]
    assert ds.label_path(2).endswith("cls/d.mat") and ds.image_path(2).endswith("img/d.jpg")
    assert label.dtype == np.int64 and image.shape == (24, 32, 3)
    np.testing.assert_array_equal(label, sbd_labels["d"])
    val = build_dataset("voc_aug", tmp_path, "val")
    assert [val.name(i) for i in range(len(val))] == ["c"]
    assert len(build_dataset("voc_aug", tmp_path, "train_aug")) == 4


def test_voc_aug_without_sbd_says_where(tmp_path):
    make_voc(tmp_path, np.random.default_rng(2), {"train": ["a"], "val": ["b"]})
    with pytest.raises(FcnDeployError, match="benchmark_RELEASE/dataset/cls"):
        build_dataset("voc_aug", tmp_path, "train")


# ---------------------------------------------------------------- Cityscapes


def test_cityscapes_label_ids_map_to_train_ids(tmp_path):
    rng = np.random.default_rng(3)
    ids = np.array([[7, 26, 33, 0], [6, 24, 23, 255]])  # road, car, bicycle, unlabeled, ground, person, sky, 255
    expected = np.array([[0, 13, 18, 255], [255, 11, 10, 255]])
    for split, city in [("train", "aachen"), ("train", "bremen"), ("val", "lindau")]:
        stem = f"{city}_000000_000019"
        write_rgb(tmp_path / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", random_image(rng, 8, 16))
        write_gray(tmp_path / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", np.kron(ids, np.ones((4, 4))))
    ds = build_dataset("cityscapes", tmp_path, "train")
    assert len(ds) == 2 and ds.num_classes == 19 and ds.ignore_index == 255
    assert ds.classes[13] == "car" and ds.palette[0] == (128, 64, 128)
    assert ds.name(0) == "aachen_000000_000019_leftImg8bit"
    image, label = ds[1]
    assert image.shape == (8, 16, 3)
    np.testing.assert_array_equal(label, np.kron(expected, np.ones((4, 4), np.int64)))
    assert len(CITYSCAPES_EVAL_IDS) == 19 and len(build_dataset("cityscapes", tmp_path, "val")) == 1


def test_cityscapes_missing_label_file(tmp_path):
    write_rgb(tmp_path / "leftImg8bit" / "val" / "x" / "x_0_0_leftImg8bit.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "gtFine" / "val" / "x").mkdir(parents=True)
    with pytest.raises(FcnDeployError, match="x_0_0_gtFine_labelIds.png"):
        build_dataset("cityscapes", tmp_path, "val")


# ---------------------------------------------------------------- image/mask folder


def make_folder(root: Path, rng: np.random.Generator) -> dict:
    (root / "classes.txt").write_text("background\ncat 255 0 0\nhot dog 0 0 255\n")
    labels = {}
    for i, stem in enumerate(["img0", "img1", "img2"]):
        label = blocky_label(rng, 16, 24, [0, 1, 2, 255])
        write_rgb(root / "images" / f"{stem}.{'png' if i else 'jpg'}", random_image(rng, 16, 24))
        if i == 1:
            write_palette(root / "masks" / f"{stem}.png", label, [(9, 9, 9), (255, 0, 0), (0, 0, 255)])
        else:
            write_gray(root / "masks" / f"{stem}.png", label)
        labels[stem] = label
    (root / "train.txt").write_text("img0\nimg2\n")
    (root / "val.txt").write_text("img1\n")
    return labels


def test_folder_dataset(tmp_path):
    labels = make_folder(tmp_path, np.random.default_rng(4))
    ds = build_dataset("folder", tmp_path, "train")
    assert ds.classes == ["background", "cat", "hot dog"] and ds.num_classes == 3
    assert ds.palette[1] == (255, 0, 0) and ds.palette[2] == (0, 0, 255) and len(ds.palette[0]) == 3
    assert [ds.name(i) for i in range(len(ds))] == ["img0", "img2"]
    np.testing.assert_array_equal(ds[1][1], labels["img2"])
    val = build_dataset("folder", tmp_path, "val")
    np.testing.assert_array_equal(val[0][1], labels["img1"])  # palette mask read as indices
    assert len(build_dataset("folder", tmp_path, "all")) == 3
    with pytest.raises(FcnDeployError, match="test.txt"):
        build_dataset("folder", tmp_path, "test")


def test_folder_ignore_index_option_and_bad_label_values(tmp_path):
    make_folder(tmp_path, np.random.default_rng(5))
    ds = build_dataset("folder", tmp_path, "val", ignore_index=2)
    assert ds.ignore_index == 2
    with pytest.raises(FcnDeployError, match="label value 255"):
        ds[0]  # 255 is now neither a class (0..2) nor the ignore index
    write_rgb(tmp_path / "masks" / "img1.png", np.zeros((16, 24, 3), np.uint8))
    with pytest.raises(FcnDeployError, match="colours"):
        build_dataset("folder", tmp_path, "val")[0]


# ---------------------------------------------------------------- CamVid


def make_camvid(root: Path, rng: np.random.Generator) -> None:
    layout = [("train", ["0001TP_006690", "0001TP_006720"], True), ("val", ["Seq05VD_f00000"], False)]
    for split, stems, with_list in layout:
        lines = []
        for stem in stems:
            write_rgb(root / split / f"{stem}.png", random_image(rng, 12, 16))
            write_gray(root / f"{split}annot" / f"{stem}.png", blocky_label(rng, 12, 16, list(range(12))))
            lines.append(f"/SegNet/CamVid/{split}/{stem}.png /SegNet/CamVid/{split}annot/{stem}.png\n")
        if with_list:
            (root / f"{split}.txt").write_text("".join(lines))


def test_camvid_segnet_layout(tmp_path):
    make_camvid(tmp_path, np.random.default_rng(6))
    ds = build_dataset("camvid", tmp_path, "train")
    assert len(ds) == 2 and ds.num_classes == 11 and ds.ignore_index == 11
    assert ds.classes[0] == "Sky" and ds.palette[3] == (128, 64, 128) and len(ds.class_weights) == 11
    assert ds.image_path(1) == str(tmp_path / "train" / "0001TP_006720.png")
    image, label = ds[0]
    assert image.shape == (12, 16, 3) and label.shape == (12, 16) and label.dtype == np.int64
    assert label.max() <= 11
    assert len(build_dataset("camvid", tmp_path, "val")) == 1  # no val.txt: paired by name
    assert len(build_dataset("camvid", tmp_path, "trainval")) == 3
    with pytest.raises(FcnDeployError, match="test"):
        build_dataset("camvid", tmp_path, "test")


@pytest.mark.skipif(not REAL_CAMVID.is_dir(), reason=f"real CamVid not found at {REAL_CAMVID}")
def test_real_camvid_items():
    counts = {"train": 367, "val": 101, "test": 233}
    for split, count in counts.items():
        assert len(build_dataset("camvid", REAL_CAMVID, split)) == count
    ds = build_dataset("camvid", REAL_CAMVID, "test")
    seen = set()
    for i in (0, 100, 232):
        image, label = ds[i]
        assert image.shape == (360, 480, 3) and image.dtype == np.uint8 and label.shape == (360, 480)
        assert 0 <= label.min() and label.max() <= 11
        seen |= set(np.unique(label).tolist())
    assert 11 in seen and len(seen) >= 8  # the ignore class occurs, and most classes do


# ---------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_labelled():
    ds = build_dataset("synthetic", None, "train", size=(48, 64), count=6, seed=3)
    assert len(ds) == 6 and ds.num_classes == 5 and ds.image_path(0) is None
    a, b = ds[2], build_dataset("synthetic", None, "train", size=(48, 64), count=6, seed=3)[2]
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape == (48, 64, 3) and a[0].dtype == np.uint8 and a[1].dtype == np.int64
    assert not np.array_equal(a[0], ds[3][0])
    assert not np.array_equal(a[0], build_dataset("synthetic", None, "val", size=(48, 64), count=6, seed=3)[2][0])
    values = set(np.unique(np.concatenate([ds[i][1].ravel() for i in range(len(ds))])).tolist())
    assert {0, 1, 255} <= values and values <= {0, 1, 2, 3, 4, 255} and len(values) >= 5
    plain = build_dataset("synthetic", None, "train", count=1, ignore_boundaries=False)
    assert plain[0][1].max() < 5


def test_synthetic_is_learnable_by_a_colour_classifier():
    # Nearest class-mean colour (after a 5x5 blur) fitted on train must label val well.
    train = build_dataset("synthetic", None, "train", size=(48, 64), count=12)
    val = build_dataset("synthetic", None, "val", size=(48, 64), count=6)

    def pixels(ds):
        xs, ys = zip(*(ds[i] for i in range(len(ds))))
        x = np.concatenate([cv2.blur(x.astype(np.float32), (5, 5)).reshape(-1, 3) for x in xs])
        y = np.concatenate([y.ravel() for y in ys])
        return x[y != 255], y[y != 255]

    x, y = pixels(train)
    centres = np.stack([x[y == c].mean(0) for c in range(train.num_classes)])
    xv, yv = pixels(val)
    predicted = np.argmin(((xv[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert (predicted == yv).mean() > 0.9


# ---------------------------------------------------------------- shared behaviour


def test_transformed_items_are_reproducible_per_seed_epoch_index():
    transform = Compose([RandomScale(0.5, 1.5), RandomCrop(40, 40, 255), RandomHorizontalFlip()])
    ds = build_dataset("synthetic", None, "train", transform=transform, size=(48, 64), count=4)
    first = ds[1]
    np.testing.assert_array_equal(first[0], ds[1][0])
    np.testing.assert_array_equal(first[1], ds[1][1])
    assert first[0].shape == (40, 40, 3)
    ds.set_epoch(1)
    assert not np.array_equal(first[0], ds[1][0])
    ds.set_epoch(0)
    np.testing.assert_array_equal(first[0], ds[1][0])
    with pytest.raises(IndexError):
        ds[4]
    np.testing.assert_array_equal(ds[-3][0], first[0])


@pytest.mark.parametrize("name", ["camvid", "voc", "voc_aug", "cityscapes", "folder"])
def test_missing_root_is_one_clear_line(tmp_path, name):
    with pytest.raises(FcnDeployError) as error:
        build_dataset(name, tmp_path / "nowhere", "train")
    message = str(error.value)
    assert "\n" not in message and "nowhere" in message and "expected" in message


def test_missing_split_and_bad_names(tmp_path):
    make_voc(tmp_path, np.random.default_rng(7), {"train": ["a"]})
    with pytest.raises(FcnDeployError, match=r"ImageSets/Segmentation/val\.txt"):
        build_dataset("voc", tmp_path, "val")
    with pytest.raises(FcnDeployError, match="unknown dataset 'kitti'"):
        build_dataset("kitti", tmp_path, "train")
    with pytest.raises(FcnDeployError, match="needs a root"):
        build_dataset("voc", None, "train")
    with pytest.raises(FcnDeployError, match="no option 'colour'"):
        build_dataset("synthetic", None, "train", colour=True)
    assert available_datasets() == ["camvid", "cityscapes", "folder", "synthetic", "voc", "voc_aug"]


def test_median_frequency_weights():
    # freq(c) = pixels of c / labelled pixels of the images containing c.
    frequencies = np.array([0.5, 0.25, 0.125, 0.0])
    np.testing.assert_allclose(median_frequency_weights(frequencies), [0.5, 1.0, 2.0, 0.0])
    ds = build_dataset("synthetic", None, "train", size=(32, 32), count=3)
    freq = class_pixel_frequencies(ds)
    assert freq.shape == (5,) and (freq >= 0).all() and (freq <= 1).all() and freq[0] > 0
