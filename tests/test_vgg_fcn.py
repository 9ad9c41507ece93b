"""The paper's VGG16 FCNs: sizes, initialisation, at-once scaling, pytorch-fcn and torchvision files."""
from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fcn_deploy.models import PretrainedError, build_model, load_pretrained
from fcn_deploy.models.upsampling import convert_upsampling_to_grouped
from fcn_deploy.models.staged import init_from_coarser
from fcn_deploy.models.vgg import IMAGENET_WEIGHTS
from fcn_deploy.models.weight_files import WEIGHT_FILES
from fcn_deploy.normalization import CAFFE_VGG, TORCHVISION_IMAGENET

WIDTH = 16  # channel divisor: 4..32 conv channels and a 256-wide fc6/fc7
VGG_MODELS = ["fcn32s_vgg16", "fcn16s_vgg16", "fcn8s_vgg16", "fcn8s_atonce_vgg16"]
VARIANT = {"fcn32s_vgg16": "32s", "fcn16s_vgg16": "16s", "fcn8s_vgg16": "8s", "fcn8s_atonce_vgg16": "8s-atonce"}
CONVS = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
         "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3"]
CONV_OUT = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-zero weights everywhere (the scorers start at zero), scaled to keep values tame."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
    return model


class PytorchFcnLayout(nn.Module):
    """pytorch-fcn's FCN32s / FCN16s / FCN8s / FCN8sAtOnce, written out independently of
    fcn_deploy: the same top-level parameter names, the same layers and crops, at a channel
    divisor ``width``. Its state dict is what a ``*_from_caffe.pth`` file holds."""

    UPSAMPLERS = {
        "32s": {"upscore": (64, 32)},
        "16s": {"upscore2": (4, 2), "upscore16": (32, 16)},
        "8s": {"upscore2": (4, 2), "upscore8": (16, 8), "upscore_pool4": (4, 2)},
    }

    def __init__(self, variant: str, n_class: int, width: int = 1):
        super().__init__()
        self.at_once = variant == "8s-atonce"
        self.variant = "8s" if self.at_once else variant
        cin = 3
        for name, c in zip(CONVS, CONV_OUT):
            setattr(self, name, nn.Conv2d(cin, c // width, 3, padding=100 if name == "conv1_1" else 1))
            cin = c // width
        fc = 4096 // width
        self.fc6 = nn.Conv2d(cin, fc, 7)
        self.fc7 = nn.Conv2d(fc, fc, 1)
        self.score_fr = nn.Conv2d(fc, n_class, 1)
        if self.variant != "32s":
            self.score_pool4 = nn.Conv2d(512 // width, n_class, 1)
        if self.variant == "8s":
            self.score_pool3 = nn.Conv2d(256 // width, n_class, 1)
        for name, (k, s) in self.UPSAMPLERS[self.variant].items():
            setattr(self, name, nn.ConvTranspose2d(n_class, n_class, k, stride=s, bias=False))

    def forward(self, x):
        h, pools, i = x, [], 0
        for n in (2, 2, 3, 3, 3):
            for _ in range(n):
                h = F.relu(getattr(self, CONVS[i])(h))
                i += 1
            h = F.max_pool2d(h, 2, 2, ceil_mode=True)
            pools.append(h)
        h = self.score_fr(F.relu(self.fc7(F.relu(self.fc6(h)))))  # dropout: identity in eval
        H, W = x.shape[2], x.shape[3]
        if self.variant == "32s":
            return self.upscore(h)[:, :, 19:19 + H, 19:19 + W]
        up2 = self.upscore2(h)
        pool4 = pools[3] * 0.01 if self.at_once else pools[3]
        h = up2 + self.score_pool4(pool4)[:, :, 5:5 + up2.shape[2], 5:5 + up2.shape[3]]
        if self.variant == "16s":
            return self.upscore16(h)[:, :, 27:27 + H, 27:27 + W]
        up4 = self.upscore_pool4(h)
        pool3 = pools[2] * 0.0001 if self.at_once else pools[2]
        h = up4 + self.score_pool3(pool3)[:, :, 9:9 + up4.shape[2], 9:9 + up4.shape[3]]
        return self.upscore8(h)[:, :, 31:31 + H, 31:31 + W]


def torchvision_vgg16_state_dict(width: int = WIDTH, seed: int = 0) -> dict:
    """Random tensors in torchvision's ``vgg16()`` layout: ``features.N`` convolutions (index
    0, 2, 5, ... skipping ReLUs and pools), ``classifier.0/3/6`` Linear layers."""
    g = torch.Generator().manual_seed(seed)
    conv_index = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    sd, cin = {}, 3
    for i, c in zip(conv_index, CONV_OUT):
        sd[f"features.{i}.weight"] = torch.randn(c // width, cin, 3, 3, generator=g) / (9 * cin) ** 0.5
        sd[f"features.{i}.bias"] = torch.randn(c // width, generator=g) * 0.1
        cin = c // width
    fc = 4096 // width
    for i, (out, inp) in {0: (fc, cin * 49), 3: (fc, fc), 6: (1000, fc)}.items():
        sd[f"classifier.{i}.weight"] = torch.randn(out, inp, generator=g) / inp ** 0.5
        sd[f"classifier.{i}.bias"] = torch.randn(out, generator=g) * 0.1
    return sd


def torchvision_like_vgg16(sd: dict, width: int = WIDTH):
    """torchvision's VGG16 built from plain layers (conv 3x3 padding 1, ReLU, max pool 2/2,
    then Linear-ReLU-Dropout twice), loaded with ``sd``."""
    layers, cin = [], 3
    for n, c in zip((2, 2, 3, 3, 3), (64, 128, 256, 512, 512)):
        for _ in range(n):
            layers += [nn.Conv2d(cin, c // width, 3, padding=1), nn.ReLU(inplace=True)]
            cin = c // width
        layers.append(nn.MaxPool2d(2, 2))
    features = nn.Sequential(*layers)
    fc = 4096 // width
    classifier = nn.Sequential(nn.Linear(cin * 49, fc), nn.ReLU(True), nn.Dropout(),
                               nn.Linear(fc, fc), nn.ReLU(True), nn.Dropout(), nn.Linear(fc, 1000))
    features.load_state_dict({k[9:]: v for k, v in sd.items() if k.startswith("features.")})
    classifier.load_state_dict({k[11:]: v for k, v in sd.items() if k.startswith("classifier.")})
    return features.eval(), classifier.eval()


def pool5_of(model, x):
    net = model.coarse_score_net()
    return net[: list(net._modules).index("pool5") + 1](x)


# --- shapes ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", VGG_MODELS)
def test_output_size_equals_input_size(name):
    model = randomise(build_model(name, 3, width=WIDTH)).eval()
    with torch.no_grad():
        for hw in [(1, 1), (2, 3), (8, 8), (31, 33), (32, 32), (97, 131)]:
            for n in (1, 2):
                y = model(torch.randn(n, 3, *hw))
                assert y.shape == (n, 3, *hw), (hw, n)
                assert torch.isfinite(y).all()


def test_full_size_keys_and_shapes_are_pytorch_fcns():
    """The real nets (built on the meta device: no memory, no time) hold exactly the
    tensors of pytorch-fcn's ``*_from_caffe.pth`` files, 21 PASCAL classes."""
    convs, cin = {}, 3
    for name, c in zip(CONVS, CONV_OUT):
        convs[f"{name}.weight"], convs[f"{name}.bias"] = (c, cin, 3, 3), (c,)
        cin = c
    trunk = {**convs, "fc6.weight": (4096, 512, 7, 7), "fc6.bias": (4096,),
             "fc7.weight": (4096, 4096, 1, 1), "fc7.bias": (4096,),
             "score_fr.weight": (21, 4096, 1, 1), "score_fr.bias": (21,)}
    pool4 = {"score_pool4.weight": (21, 512, 1, 1), "score_pool4.bias": (21,), "upscore2.weight": (21, 21, 4, 4)}
    pool3 = {"score_pool3.weight": (21, 256, 1, 1), "score_pool3.bias": (21,),
             "upscore_pool4.weight": (21, 21, 4, 4), "upscore8.weight": (21, 21, 16, 16)}
    expected = {
        "fcn32s_vgg16": {**trunk, "upscore.weight": (21, 21, 64, 64)},
        "fcn16s_vgg16": {**trunk, **pool4, "upscore16.weight": (21, 21, 32, 32)},
        "fcn8s_vgg16": {**trunk, **pool4, **pool3},
        "fcn8s_atonce_vgg16": {**trunk, **pool4, **pool3},
    }
    for name in VGG_MODELS:
        with torch.device("meta"):
            model = build_model(name, 21)
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected[name], name
        assert model.normalization == CAFFE_VGG
    # VGG16 has 138,357,544 parameters; without its 1000-class scorer 134,260,544 remain.
    backbone = {k: v for k, v in trunk.items() if not k.startswith("score_fr")}
    assert sum(torch.Size(s).numel() for s in backbone.values()) == 138_357_544 - (4096 * 1000 + 1000)


@pytest.mark.slow
def test_full_width_fcn8s_runs_on_a_tiny_input():
    model = build_model("fcn8s_vgg16", 21).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 5, 7)).shape == (1, 21, 5, 7)


# --- initialisation ----------------------------------------------------------------------

def test_bilinear_upsampling_kernels():
    model = build_model("fcn8s_vgg16", 3, width=WIDTH)
    # Kernel 4 (stride 2): factor 2, centre 1.5, 1-D taps 1 - |i - 1.5| / 2.
    taps4 = torch.tensor([0.25, 0.75, 0.75, 0.25])
    for layer in (model.upscore2, model.upscore_pool4):
        w = layer.weight.detach()
        for c in range(3):
            assert torch.allclose(w[c, c], torch.outer(taps4, taps4))
        assert (w.sum(dim=(2, 3)) * (1 - torch.eye(3)) == 0).all()  # no cross-class weights
    # Kernel 16 (stride 8): factor 8, centre 7.5: taps 1/16, 3/16, ..., 15/16, 15/16, ..., 1/16.
    taps16 = torch.tensor([1, 3, 5, 7, 9, 11, 13, 15, 15, 13, 11, 9, 7, 5, 3, 1]) / 16
    assert torch.allclose(model.upscore8.weight[1, 1], torch.outer(taps16, taps16))
    # Kernel 64 (stride 32): first taps 1 - 31.5/32 = 1/64, 3/64.
    w64 = build_model("fcn32s_vgg16", 2, width=WIDTH).upscore.weight.detach()
    assert w64[0, 0, 0, 0] == pytest.approx((1 / 64) ** 2)
    assert w64[0, 0, 0, 1] == pytest.approx(1 / 64 * 3 / 64)
    # A bilinear 2x upsampling of a constant map is that constant away from the border.
    up = model.upscore2(torch.full((1, 3, 5, 5), 2.0))
    assert torch.allclose(up[:, :, 2:-2, 2:-2], torch.full_like(up[:, :, 2:-2, 2:-2], 2.0))


@pytest.mark.parametrize("name", VGG_MODELS)
def test_scorers_start_at_zero(name):
    model = build_model(name, 4, width=WIDTH).eval()
    for layer in ("score_fr", "score_pool4", "score_pool3"):
        if hasattr(model, layer):
            assert (getattr(model, layer).weight == 0).all() and (getattr(model, layer).bias == 0).all()
    with torch.no_grad():
        assert (model(torch.randn(1, 3, 20, 24)) == 0).all()  # "predict nothing" at the start


def test_learnable_upsampling_option():
    paper = build_model("fcn8s_vgg16", 3, width=WIDTH)
    # The paper learns the 2x layers and keeps the final 8x layer bilinear.
    assert paper.upscore2.weight.requires_grad and paper.upscore_pool4.weight.requires_grad
    assert not paper.upscore8.weight.requires_grad
    frozen = build_model("fcn16s_vgg16", 3, width=WIDTH, learnable_upsampling=False)
    assert not frozen.upscore2.weight.requires_grad and not frozen.upscore16.weight.requires_grad
    assert "upscore2.weight" in frozen.state_dict()  # still saved and loaded
    assert not build_model("fcn32s_vgg16", 3, width=WIDTH).upscore.weight.requires_grad


def test_at_once_scales_pool4_and_pool3():
    at_once = randomise(build_model("fcn8s_atonce_vgg16", 3, width=WIDTH)).eval()
    staged = build_model("fcn8s_vgg16", 3, width=WIDTH).eval()
    staged.load_state_dict(at_once.state_dict())
    x = torch.randn(2, 3, 41, 29)
    with torch.no_grad():
        y = at_once(x)
        assert not torch.allclose(y, staged(x), atol=1e-3)
        # Scaling a 1x1 scorer's input is scaling its weight: the staged net with
        # score_pool4 x 0.01 and score_pool3 x 0.0001 (biases kept) is the at-once net.
        staged.score_pool4.weight.mul_(0.01)
        staged.score_pool3.weight.mul_(0.0001)
        assert torch.allclose(y, staged(x), rtol=1e-4, atol=1e-5)
        # And by hand from the features.
        pool3, pool4, fc7 = at_once.features(x)
        up2 = at_once.upscore2(at_once.score_fr(fc7))
        h = up2 + at_once.score_pool4(pool4 * 0.01)[:, :, 5:5 + up2.shape[2], 5:5 + up2.shape[3]]
        up4 = at_once.upscore_pool4(h)
        h = up4 + at_once.score_pool3(pool3 * 0.0001)[:, :, 9:9 + up4.shape[2], 9:9 + up4.shape[3]]
        manual = at_once.upscore8(h)[:, :, 31:31 + 41, 31:31 + 29]
        assert torch.allclose(y, manual, rtol=1e-5, atol=1e-6)


def test_grouped_upsampling_gives_identical_outputs():
    model = randomise(build_model("fcn8s_vgg16", 4, width=WIDTH)).eval()
    for layer in (model.upscore2, model.upscore_pool4, model.upscore8):  # back to diagonal
        with torch.no_grad():
            layer.weight.mul_(torch.eye(4)[:, :, None, None])
    x = torch.randn(1, 3, 35, 22)
    with torch.no_grad():
        dense = model(x)
        assert convert_upsampling_to_grouped(model) == 3
        assert model.upscore8.groups == 4
        assert torch.allclose(model(x), dense, rtol=1e-5, atol=1e-6)


# --- pytorch-fcn files -------------------------------------------------------------------

@pytest.mark.parametrize("name", VGG_MODELS)
def test_loads_pytorch_fcn_file_and_reproduces_it(name, tmp_path):
    torch.manual_seed(1)
    ref = randomise(PytorchFcnLayout(VARIANT[name], 5, WIDTH), seed=1).eval()
    path = tmp_path / "fcn_from_caffe.pth"
    torch.save(ref.state_dict(), path)
    model = build_model(name, 5, width=WIDTH, pretrained=str(path)).eval()
    assert model.normalization == CAFFE_VGG
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    x = torch.randn(2, 3, 45, 38)
    with torch.no_grad():
        expected = ref(x)
        assert expected.abs().max() > 1e-3  # a real signal, not zeros
        assert torch.allclose(model(x), expected, rtol=1e-4, atol=1e-5)


def test_pytorch_fcn_file_with_missing_or_extra_key_is_named(tmp_path):
    sd = randomise(PytorchFcnLayout("8s", 5, WIDTH)).state_dict()
    model = build_model("fcn8s_vgg16", 5, width=WIDTH)
    missing = {k: v for k, v in sd.items() if k != "conv3_2.weight"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(PretrainedError, match=r"missing keys: .*conv3_2\.weight"):
        load_pretrained(model, str(tmp_path / "missing.pth"))
    torch.save({**sd, "score_extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(PretrainedError, match=r"unexpected keys: .*score_extra\.weight"):
        load_pretrained(model, str(tmp_path / "extra.pth"))
    # A finer net's file does not go into a coarser net: its skips have nowhere to go.
    torch.save(sd, tmp_path / "fcn8s.pth")
    with pytest.raises(PretrainedError, match="score_pool3"):
        load_pretrained(build_model("fcn32s_vgg16", 5, width=WIDTH), str(tmp_path / "fcn8s.pth"))


def test_staged_initialisation_from_a_coarser_net(tmp_path):
    fcn32s = randomise(build_model("fcn32s_vgg16", 3, width=WIDTH))
    fcn16s = build_model("fcn16s_vgg16", 3, width=WIDTH)
    copied = init_from_coarser(fcn16s, fcn32s)
    assert "score_fr.weight" in copied and "conv1_1.weight" in copied and "upscore.weight" not in copied
    assert torch.equal(fcn16s.fc6.weight, fcn32s.fc6.weight)
    assert (fcn16s.score_pool4.weight == 0).all()  # the new skip starts silent
    fcn8s = build_model("fcn8s_vgg16", 3, width=WIDTH)
    randomise(fcn16s, seed=3)
    assert "score_pool4.weight" in init_from_coarser(fcn8s, fcn16s)
    assert torch.equal(fcn8s.upscore2.weight, fcn16s.upscore2.weight)
    with pytest.raises(PretrainedError):
        init_from_coarser(fcn32s, fcn8s)
    # The same through a file: an FCN-32s state dict initialises an FCN-16s.
    torch.save(fcn32s.state_dict(), tmp_path / "fcn32s.pth")
    from_file = build_model("fcn16s_vgg16", 3, width=WIDTH, pretrained=str(tmp_path / "fcn32s.pth"))
    assert torch.equal(from_file.score_fr.weight, fcn32s.score_fr.weight)
    assert (from_file.score_pool4.weight == 0).all()


# --- torchvision files -------------------------------------------------------------------

def test_imagenet_weights_are_torchvisions_vgg16():
    model = build_model("fcn32s_vgg16", 2, width=WIDTH)
    assert model.imagenet_weights() == IMAGENET_WEIGHTS == "vgg16-imagenet"
    assert WEIGHT_FILES[IMAGENET_WEIGHTS].url == "https://download.pytorch.org/models/vgg16-397923af.pth"


def test_loads_torchvision_vgg16_layout(tmp_path):
    sd = torchvision_vgg16_state_dict()
    torch.save(sd, tmp_path / "vgg16.pth")
    model = build_model("fcn8s_vgg16", 4, width=WIDTH, pretrained=str(tmp_path / "vgg16.pth")).eval()
    assert model.normalization == TORCHVISION_IMAGENET  # the weights decide the input scaling
    fc, c5 = 4096 // WIDTH, 512 // WIDTH
    assert torch.equal(model.fc6.weight, sd["classifier.0.weight"].view(fc, c5, 7, 7))
    assert torch.equal(model.fc7.weight, sd["classifier.3.weight"].view(fc, fc, 1, 1))
    assert torch.equal(model.conv3_1.weight, sd["features.10.weight"])
    assert torch.equal(model.conv5_3.bias, sd["features.28.bias"])
    assert (model.score_fr.weight == 0).all()  # the head keeps its initialisation

    # Run both nets. conv1_1's padding of 100 is torchvision's padding of 1 on an input
    # zero-padded by 99; a 26x26 input becomes torchvision's 224x224, where every pool
    # halves exactly (so rounding up changes nothing) and pool5 is 7x7: fc6 is then one
    # output pixel equal to classifier.0 on the flattened map.
    features, classifier = torchvision_like_vgg16(sd)
    x = torch.randn(2, 3, 26, 26)
    with torch.no_grad():
        tv_pool5 = features(F.pad(x, (99, 99, 99, 99)))
        assert torch.allclose(pool5_of(model, x), tv_pool5, rtol=1e-4, atol=1e-5)
        _, _, fc7 = model.features(x)
        assert fc7.shape[2:] == (1, 1)
        tv_fc7 = classifier[:6](tv_pool5.flatten(1))
        assert torch.allclose(fc7.flatten(1), tv_fc7, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                    reason="torchvision is not installed: its own VGG16 features cannot be compared")
def test_features_equal_torchvisions_vgg16_features(tmp_path):
    from torchvision.models.vgg import make_layers

    sd = torchvision_vgg16_state_dict()
    cfg = [c if c == "M" else c // WIDTH for c in
           [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]]
    features = make_layers(cfg).eval()
    features.load_state_dict({k[9:]: v for k, v in sd.items() if k.startswith("features.")})
    torch.save(sd, tmp_path / "vgg16.pth")
    model = build_model("fcn32s_vgg16", 3, width=WIDTH, pretrained=str(tmp_path / "vgg16.pth")).eval()
    x = torch.randn(1, 3, 26, 26)
    with torch.no_grad():
        assert torch.allclose(pool5_of(model, x), features(F.pad(x, (99, 99, 99, 99))), rtol=1e-4, atol=1e-5)


def test_torchvision_file_with_missing_or_extra_key_is_named(tmp_path):
    sd = torchvision_vgg16_state_dict()
    model = build_model("fcn16s_vgg16", 4, width=WIDTH)
    torch.save({k: v for k, v in sd.items() if k != "features.10.weight"}, tmp_path / "missing.pth")
    with pytest.raises(PretrainedError, match=r"missing keys: .*conv3_1\.weight"):
        load_pretrained(model, str(tmp_path / "missing.pth"))
    assert model.normalization == CAFFE_VGG  # nothing loaded, nothing switched
    torch.save({**sd, "features.31.weight": torch.zeros(3)}, tmp_path / "extra.pth")
    with pytest.raises(PretrainedError, match=r"unexpected keys: .*features\.31\.weight"):
        load_pretrained(model, str(tmp_path / "extra.pth"))
    # Full-size ImageNet weights do not fit a narrowed net: a shape error, not a crash.
    torch.save(torchvision_vgg16_state_dict(width=8), tmp_path / "wide.pth")
    with pytest.raises(PretrainedError, match="shape mismatch"):
        load_pretrained(model, str(tmp_path / "wide.pth"))


def test_bad_options_are_clear_errors():
    from fcn_deploy.errors import FcnDeployError

    with pytest.raises(FcnDeployError, match="width"):
        build_model("fcn8s_vgg16", 3, width=0)
    with pytest.raises(FcnDeployError, match="pretrained"):
        build_model("fcn8s_vgg16", 3, width=WIDTH, pretrained=True)
