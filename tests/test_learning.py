"""Learning checks: a few optimiser steps on a fixed toy batch must move the quantity each loss is *about* (a cosine, a
reconstruction error, a retrieval rank, a distance, a posterior) in the right direction. A sign error or a misplaced
stop-gradient would still give matching shapes, but not these."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_ae import losses as L
from ssl_ae.augment import PRESETS
from ssl_ae.data import load_dataset
from ssl_ae.models import GaussianHead, Predictor, Projector


@pytest.fixture(scope="module")
def batch():
    "64 toy images in [0, 1], standardised roughly, with two fixed simsiam_cifar views."
    x, _ = load_dataset("toy", split="test")
    x = x[:64]
    v = PRESETS["simsiam_cifar"](x, torch.Generator().manual_seed(0))
    norm = lambda t: (t - 0.5) / 0.25
    return norm(x.float() / 255), norm(v.x1), norm(v.x2)


def encoder(out_dim=32):
    "A tiny convolutional encoder: (B, 3, 32, 32) → (B, out_dim)."
    return nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, out_dim))


def decoder(in_dim=32):
    "A tiny decoder: (B, in_dim) → (B, 3, 32, 32)."
    return nn.Sequential(nn.Linear(in_dim, 32 * 8 * 8), nn.Unflatten(1, (32, 8, 8)), nn.ReLU(),
                         nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(16, 3, 4, 2, 1))


def train(params, loss_fn, steps=40, lr=1e-2):
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad(); loss_fn().backward(); opt.step()


def retrieval_accuracy(z1, z2):
    "Share of the 2N views whose most similar other view is their partner."
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sims = (z @ z.T).fill_diagonal_(-2)
    n = len(z1)
    return (sims.argmax(1) == torch.cat([torch.arange(n, 2 * n), torch.arange(n)])).float().mean().item()


def test_simsiam_aligns_predictions_with_the_other_view(batch):
    torch.manual_seed(0)
    _, x1, x2 = batch
    enc, proj, pred = encoder(), Projector(32, 64, 32), Predictor(32, 16)
    params = [*enc.parameters(), *proj.parameters(), *pred.parameters()]
    def parts():
        z1, z2 = proj(enc(x1)), proj(enc(x2))
        return pred(z1), pred(z2), z1, z2
    def cos():
        with torch.no_grad():
            p1, p2, z1, z2 = parts()
            return 0.5 * (F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean()).item()
    before = cos()
    train(params, lambda: L.simsiam_loss(*parts()))
    assert cos() > before + 0.3


def test_dae_reconstructs_the_clean_image(batch):
    torch.manual_seed(0)
    x, x1, x2 = batch
    enc, dec = encoder(), decoder()
    params = [*enc.parameters(), *dec.parameters()]
    err = lambda: F.mse_loss(dec(enc(x1)), x).item()
    before = err()
    train(params, lambda: L.dae_loss(x, dec(enc(x1)), dec(enc(x2))), steps=100)
    assert err() < 0.8 * before


def test_sidae_lowers_both_parts(batch):
    torch.manual_seed(0)
    x, x1, x2 = batch
    enc, proj, pred, dec = encoder(), Projector(32, 64, 32), Predictor(32, 16), decoder()
    params = [p for m in (enc, proj, pred, dec) for p in m.parameters()]
    def parts():
        z1, z2 = proj(enc(x1)), proj(enc(x2))
        return dict(x=x, r1=dec(z1), r2=dec(z2), p1=pred(z1), p2=pred(z2), z1=z1, z2=z2)
    def both():
        with torch.no_grad():
            q = parts()
            return L.dae_loss(q["x"], q["r1"], q["r2"]).item(), L.simsiam_loss(q["p1"], q["p2"], q["z1"], q["z2"]).item()
    dae0, si0 = both()
    train(params, lambda: L.sidae_loss(**parts(), w=0.5))
    dae1, si1 = both()
    assert dae1 < 0.7 * dae0 and si1 < si0 - 0.2


@pytest.mark.parametrize("kind", L.EMBEDDING_KINDS)
def test_embedding_loss_pulls_the_views_together(batch, kind):
    torch.manual_seed(0)
    _, x1, x2 = batch
    enc = encoder()
    def distance():  # measured independently of the loss under test: the angle between the two embeddings
        with torch.no_grad(): return 1 - F.cosine_similarity(enc(x1), enc(x2)).mean().item()
    before = distance()
    train(list(enc.parameters()), lambda: L.embedding_loss(enc(x1), enc(x2), kind), steps=30, lr=3e-3)
    assert distance() < 0.5 * before


def test_dae_embedding_loss_denoises_and_aligns(batch):
    torch.manual_seed(0)
    x, x1, x2 = batch
    enc, dec = encoder(), decoder()
    params = [*enc.parameters(), *dec.parameters()]
    def measures():
        with torch.no_grad():
            z1, z2 = enc(x1), enc(x2)
            return F.mse_loss(dec(z1), x).item(), 1 - F.cosine_similarity(z1, z2).mean().item()
    err0, dist0 = measures()
    def loss():
        z1, z2 = enc(x1), enc(x2)
        return L.dae_embedding_loss(x, dec(z1), dec(z2), z1, z2, alpha=32.0, kind="ncs")  # alpha / d = 1
    train(params, loss, steps=100)
    err1, dist1 = measures()
    assert err1 < 0.8 * err0 and dist1 < dist0


@pytest.mark.parametrize("gs", [False, True])
def test_contrastive_losses_learn_to_find_the_partner_view(batch, gs):
    torch.manual_seed(0)
    _, x1, x2 = batch
    enc = encoder()
    ones = torch.ones(len(x1))
    loss = (lambda: L.simclr_gs_loss(enc(x1), enc(x2), ones, 0.8 * ones, 0.5)) if gs else (lambda: L.nt_xent(enc(x1), enc(x2), 0.5))
    with torch.no_grad(): before = retrieval_accuracy(enc(x1), enc(x2))
    train(list(enc.parameters()), loss, steps=40, lr=3e-3)
    with torch.no_grad(): after = retrieval_accuracy(enc(x1), enc(x2))
    assert after > before + 0.25, (before, after)


def test_gaussian_nll_fits_mean_and_width():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 4, 4) * 0.3 + torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1)
    mean = torch.zeros(1, 3, 1, 1, requires_grad=True)  # one mean per channel: it cannot fit the noise
    logscale = torch.tensor(1.0, requires_grad=True)
    train([mean, logscale], lambda: L.gaussian_nll(x, mean.expand_as(x), logscale), steps=400, lr=3e-2)
    torch.testing.assert_close(mean.detach().flatten(), x.mean((0, 2, 3)), atol=0.02, rtol=0)
    assert abs(logscale.item() - torch.log(torch.tensor(0.3)).item()) < 0.05  # σ learned = the noise's spread


def test_kl_pulls_the_posterior_to_the_prior():
    torch.manual_seed(0)
    mu, logvar = (torch.randn(16, 8) * 2).requires_grad_(), (torch.randn(16, 8)).requires_grad_()
    train([mu, logvar], lambda: L.kl_standard_normal(mu, logvar), steps=500, lr=5e-2)
    assert mu.abs().max() < 0.05 and logvar.abs().max() < 0.05


def test_vae_loss_trains_a_stochastic_autoencoder(batch):
    torch.manual_seed(0)
    x, x1, _ = batch
    enc, head, dec = encoder(64), GaussianHead(64, 16), decoder(16)
    logscale = torch.zeros((), requires_grad=True)
    params = [*enc.parameters(), *head.parameters(), *dec.parameters(), logscale]
    def loss():
        z, mu, logvar = head(enc(x1))
        return L.vae_loss(x, dec(z), logscale, mu, logvar, beta=0.1)
    err = lambda: F.mse_loss(dec(head.eval()(enc(x1))[0]), x).item()
    before = err(); head.train()
    train(params, loss, steps=100)
    assert err() < 0.8 * before and logscale.item() < 0  # sharper than σ = 1 once it reconstructs


def test_d_gs_regresses_the_distance_onto_one_minus_psi():
    torch.manual_seed(0)
    a, b = torch.randn(32, 16, requires_grad=True), torch.randn(32, 16)
    psi = torch.rand(32)
    train([a], lambda: L.d_gs(a, b, psi), steps=300, lr=2e-2)
    d = (F.normalize(a.detach(), dim=1) - F.normalize(b, dim=1)).norm(dim=1)
    assert (d - (1 - psi)).abs().max() < 0.05


def test_simsiam_gs_targets_each_direction():
    torch.manual_seed(0)
    p1, p2 = torch.randn(16, 8, requires_grad=True), torch.randn(16, 8, requires_grad=True)
    z1, z2 = torch.randn(16, 8), torch.randn(16, 8)
    psi12, psi21 = torch.full((16,), 0.3), torch.full((16,), 0.9)
    train([p1, p2], lambda: L.simsiam_gs_loss(p1, p2, z1, z2, psi12, psi21), steps=300, lr=2e-2)
    dist = lambda p, z: (F.normalize(p.detach(), dim=1) - F.normalize(z, dim=1)).norm(dim=1)
    assert (dist(p1, z2) - 0.7).abs().max() < 0.05 and (dist(p2, z1) - 0.1).abs().max() < 0.05
