"""The widgets' render functions against independent computations, and their wiring driven in code (no training)."""
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
import torch

from ssl_ae.augment import PRESETS
from ssl_ae.data import make_toy
from ssl_ae.methods import build_method
from ssl_ae.widgets import Explorer, inspector, lambda_explorer, render_inspector, render_lambda, render_w, w_explorer

IMAGES = make_toy(8, seed=5)[0]


def mask(box, size):
    m = torch.zeros(size, size, dtype=torch.bool)
    t, l, h, w = box.tolist()
    m[t:t + h, l:l + w] = True
    return m


@pytest.mark.parametrize("lam", [0.2, 0.5, 1.0])
def test_render_lambda_overlaps_are_pixel_counts_and_psi_its_definition(lam):
    r = render_lambda(IMAGES[0], lam=lam, n_pairs=8, seed=7, augment="simclr")
    for i in range(8):
        a, b = mask(r.values["box1"][i], 32), mask(r.values["box2"][i], 32)
        assert r.values["overlap12"][i].item() == pytest.approx(((a & b).sum() / a.sum()).item(), abs=1e-6)
        assert r.values["overlap21"][i].item() == pytest.approx(((a & b).sum() / b.sum()).item(), abs=1e-6)
        expected = min(1.0, r.values["overlap12"][i].item() / lam)
        assert r.values["psi12"][i].item() == pytest.approx(expected, abs=1e-6)
    plt.close("all")


def test_render_inspector_error_maps_are_recomputable():
    torch.manual_seed(0)
    m = build_method("sidae", w=1.0, dim=32, projector_layers=2).eval()
    r = render_inspector(m, IMAGES, index=3, seed=4)
    v1, _ = PRESETS["toy"].view(IMAGES[3:4], torch.Generator().manual_seed(4))
    expected = (m.reconstruct(v1)[0] - IMAGES[3].float() / 255).abs().mean(0)
    assert torch.allclose(r.values["error1"], expected, atol=1e-5)
    assert r.values["mse1"] == pytest.approx((m.reconstruct(v1)[0] - IMAGES[3].float() / 255).pow(2).mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="index must be in"):
        render_inspector(m, IMAGES, index=8)
    plt.close("all")


def test_render_w_reports_each_models_own_loss_parts():
    torch.manual_seed(0)
    models = {w: build_method("sidae", w=w, dim=32, projector_layers=2).eval() for w in (0.0, 0.5, 1.0)}
    r = render_w(models, IMAGES, 0.5, n=4)
    p = r.values["parts"][0.5]
    assert p["loss"] == pytest.approx(0.5 * p["dae"] + 0.5 * p["simsiam"], rel=1e-5)
    assert "dae" not in r.values["parts"][0.0] and "simsiam" not in r.values["parts"][1.0]
    assert len(r.values["mse1"]) == 4
    plt.close("all")


def test_explorers_rerender_on_change_and_show_errors():
    pytest.importorskip("ipywidgets", reason="the explorers are ipywidgets (absent on the GPU machine)")
    lam = lambda_explorer(IMAGES)
    lam.controls["lam"].value = 0.3
    assert lam.last.values["lam"] == 0.3
    lam.controls["index"].value = 2
    shown = torch.as_tensor(lam.last.figure.axes[1].images[0].get_array().data).permute(2, 0, 1)
    assert torch.allclose(shown, IMAGES[2].float() / 255)   # the chosen image is the one drawn
    torch.manual_seed(0)
    trained = []
    models = {0.5: build_method("sidae", w=0.5, dim=32, projector_layers=2).eval()}
    def fake_train(w):
        trained.append(w)
        return build_method("sidae", w=w, dim=32, projector_layers=2).eval()
    ex = w_explorer(models, IMAGES, train=fake_train)
    ex.new_w.value = 0.75
    ex.button.click()
    assert trained == [0.75] and list(ex.controls["w"].options) == [0.5, 0.75] and ex.last.values["w"] == 0.75
    empty = inspector(IMAGES)
    assert empty.last is None and "type a checkpoint path" in empty.error
    empty.path.value = "/nonexistent/last.pt"
    empty.button.click()
    assert "no checkpoint at /nonexistent/last.pt" in empty.error
    plt.close("all")
