"""FCN-8s on ResNet: output size, initialisation, torchvision's weight layout."""
from __future__ import annotations

import pytest
import torch

from fcn_deploy.models import PretrainedError, build_model, load_pretrained
from fcn_deploy.models.resnet import IMAGENET_WEIGHTS, ResNetBackbone
from fcn_deploy.models.weight_files import WEIGHT_FILES
from fcn_deploy.normalization import TORCHVISION_IMAGENET

WIDTH = 16  # channel divisor: 4..32 channels per stage instead of 64..512


def torchvision_resnet_keys(depth: int, with_counters: bool = True) -> list:
    """The state-dict keys of ``torchvision.models.resnetN()``, written out from its naming
    scheme independently of our backbone (conv1, bn1, layerL.B.convK/bnK, downsample.0/1, fc)."""
    bottleneck = depth == 50
    blocks = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3]}[depth]
    bn_suffixes = ["weight", "bias", "running_mean", "running_var"] + (["num_batches_tracked"] if with_counters else [])

    def bn(prefix):
        return [f"{prefix}.{s}" for s in bn_suffixes]

    keys = ["conv1.weight"] + bn("bn1")
    for layer, n in enumerate(blocks, start=1):
        for b in range(n):
            p = f"layer{layer}.{b}"
            for k in range(1, 4 if bottleneck else 3):
                keys += [f"{p}.conv{k}.weight"] + bn(f"{p}.bn{k}")
            # torchvision adds a projection shortcut where the shape changes: the first
            # block of layers 2-4, and of layer1 too for bottlenecks (64 -> 256 channels).
            if b == 0 and (layer > 1 or bottleneck):
                keys += [f"{p}.downsample.0.weight"] + bn(f"{p}.downsample.1")
    return keys + ["fc.weight", "fc.bias"]


def torchvision_state_dict(depth: int, width: int = WIDTH, with_counters: bool = True) -> dict:
    """A state dict laid out like torchvision's ResNet (random values, classifier included)."""
    torch.manual_seed(depth)
    backbone = ResNetBackbone(depth, width)
    state = {}
    for k, v in backbone.state_dict().items():
        if k.endswith("num_batches_tracked"):
            if with_counters:
                state[k] = torch.tensor(7)
        else:
            state[k] = torch.randn_like(v) if k.endswith(("weight", "bias", "running_mean")) else torch.rand_like(v) + 0.5
    state["fc.weight"] = torch.randn(1000, backbone.out_channels["fc7"])
    state["fc.bias"] = torch.randn(1000)
    return state


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_backbone_keys_are_torchvisions(depth):
    with torch.device("meta"):
        backbone = ResNetBackbone(depth)
    expected = [k for k in torchvision_resnet_keys(depth) if not k.startswith("fc.")]
    assert list(backbone.state_dict()) == expected


def test_torchvision_key_list_has_known_names():
    keys = torchvision_resnet_keys(18)
    for known in ["conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer1.1.bn2.bias",
                  "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean",
                  "layer4.1.conv2.weight", "fc.weight", "fc.bias"]:
        assert known in keys
    assert "layer1.0.downsample.0.weight" not in keys  # no projection in ResNet-18's layer1
    assert len(keys) == 122  # torchvision.models.resnet18().state_dict() has 122 entries
    assert "layer1.0.conv3.weight" in torchvision_resnet_keys(50)
    assert "layer1.0.downsample.0.weight" in torchvision_resnet_keys(50)


@pytest.mark.parametrize("depth,torchvision_params", [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032)])
def test_full_width_parameter_count_matches_torchvision(depth, torchvision_params):
    with torch.device("meta"):
        backbone = ResNetBackbone(depth)
    fc = backbone.out_channels["fc7"] * 1000 + 1000
    assert sum(p.numel() for p in backbone.parameters()) + fc == torchvision_params


@pytest.mark.parametrize("depth", [18, 50])
def test_backbone_strides_and_channels(depth):
    backbone = ResNetBackbone(depth, WIDTH).eval()
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == {
        "pool3": (backbone.out_channels["pool3"], 8, 12),
        "pool4": (backbone.out_channels["pool4"], 4, 6),
        "fc7": (backbone.out_channels["fc7"], 2, 3),
    }


@pytest.mark.parametrize("name", ["fcn8s_resnet18", "fcn8s_resnet34", "fcn8s_resnet50"])
def test_output_size_equals_input_size(name):
    torch.manual_seed(0)
    model = build_model(name, 5, width=WIDTH).eval()
    for p in model.parameters():  # non-zero scorers, so the crop is exercised on real values
        torch.nn.init.normal_(p, std=0.1)
    assert model.name == name and model.num_classes == 5
    assert model.normalization == TORCHVISION_IMAGENET
    with torch.no_grad():
        for n, h, w in [(1, 1, 1), (2, 1, 7), (1, 31, 33), (3, 32, 32), (1, 63, 64), (2, 17, 50)]:
            out = model(torch.randn(n, 3, h, w))
            assert out.shape == (n, 5, h, w)
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
def test_variants_through_options(variant):
    model = build_model("fcn8s_resnet18", 3, width=WIDTH, variant=variant, dropout=0.1).eval()
    assert model.variant == variant
    with torch.no_grad():
        assert model(torch.randn(2, 3, 45, 70)).shape == (2, 3, 45, 70)


def test_scorers_zero_initialised_so_output_starts_at_zero():
    model = build_model("fcn8s_resnet18", 4, width=WIDTH).eval()
    for name in ("score_fr", "score_pool4", "score_pool3"):
        layer = getattr(model, name)
        assert torch.count_nonzero(layer.weight) == 0 and torch.count_nonzero(layer.bias) == 0
    with torch.no_grad():
        assert torch.count_nonzero(model(torch.randn(1, 3, 40, 50))) == 0


def test_learnable_upsampling_option():
    frozen = build_model("fcn8s_resnet18", 4, width=WIDTH, learnable_upsampling=False)
    learned = build_model("fcn8s_resnet18", 4, width=WIDTH)
    assert not frozen.upscore2.weight.requires_grad and not frozen.upscore8.weight.requires_grad
    assert learned.upscore2.weight.requires_grad


def test_imagenet_weight_urls():
    urls = {}
    for depth in (18, 34, 50):
        model = build_model(f"fcn8s_resnet{depth}", 2, width=WIDTH)
        assert model.imagenet_weights() == IMAGENET_WEIGHTS[depth] == f"resnet{depth}-imagenet"
        urls[depth] = WEIGHT_FILES[IMAGENET_WEIGHTS[depth]].url
    assert urls == {
        18: "https://download.pytorch.org/models/resnet18-f37072fd.pth",
        34: "https://download.pytorch.org/models/resnet34-b627a593.pth",
        50: "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    }


@pytest.mark.parametrize("with_counters", [True, False])
def test_loads_torchvision_layout(tmp_path, with_counters):
    state = torchvision_state_dict(18, with_counters=with_counters)
    assert list(state) == torchvision_resnet_keys(18, with_counters)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)

    model = build_model("fcn8s_resnet18", 6, width=WIDTH, pretrained=str(path))
    own = model.state_dict()
    for k, v in state.items():
        if k.startswith("fc.") or k.endswith("num_batches_tracked"):
            continue
        assert torch.equal(own["backbone." + k], v), k
    assert torch.count_nonzero(model.score_fr.weight) == 0  # the head is left alone


def test_loads_torchvision_layout_resnet50(tmp_path):
    state = torchvision_state_dict(50)
    path = tmp_path / "resnet50.pth"
    torch.save(state, path)
    model = load_pretrained(build_model("fcn8s_resnet50", 3, width=WIDTH), str(path))
    assert torch.equal(model.backbone.layer1[0].conv3.weight, state["layer1.0.conv3.weight"])
    assert torch.equal(model.backbone.layer1[0].downsample[1].running_var, state["layer1.0.downsample.1.running_var"])


def test_missing_key_is_named(tmp_path):
    state = torchvision_state_dict(18)
    del state["layer2.0.downsample.0.weight"]
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(PretrainedError, match=r"missing keys: .*layer2\.0\.downsample\.0\.weight"):
        load_pretrained(build_model("fcn8s_resnet18", 2, width=WIDTH), str(tmp_path / "w.pth"))


def test_extra_key_is_named(tmp_path):
    state = torchvision_state_dict(18)
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(PretrainedError, match=r"unexpected keys: .*layer5\.0\.conv1\.weight"):
        load_pretrained(build_model("fcn8s_resnet18", 2, width=WIDTH), str(tmp_path / "w.pth"))


def test_wrong_depth_is_a_shape_or_key_error(tmp_path):
    torch.save(torchvision_state_dict(18), tmp_path / "w.pth")
    with pytest.raises(PretrainedError, match="fcn8s_resnet50"):
        load_pretrained(build_model("fcn8s_resnet50", 2, width=WIDTH), str(tmp_path / "w.pth"))


def test_own_layout_round_trip(tmp_path):
    torch.manual_seed(1)
    src = build_model("fcn8s_resnet18", 3, width=WIDTH).eval()
    for p in src.parameters():
        torch.nn.init.normal_(p, std=0.1)
    torch.save(src.state_dict(), tmp_path / "net.pth")
    dst = build_model("fcn8s_resnet18", 3, width=WIDTH, pretrained=str(tmp_path / "net.pth")).eval()
    x = torch.randn(1, 3, 37, 41)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))

    partial = src.state_dict()
    del partial["score_pool3.weight"]
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(PretrainedError, match="score_pool3.weight"):
        load_pretrained(build_model("fcn8s_resnet18", 3, width=WIDTH), str(tmp_path / "partial.pth"))
