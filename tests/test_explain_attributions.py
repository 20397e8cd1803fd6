"""Grad-CAM lands on the joint that changed; integrated gradients add up; hit rate vs random."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from progression.explain.attributions import (
    hit_rate,
    integrated_gradients,
    joint_mass,
    progressing_joints,
    visit_attributions,
)
from progression.explain.gradcam import grad_cam, overlay, save_png

SIZE = 32
CENTRES = [(x, y) for y in (0.2, 0.5, 0.8) for x in (0.2, 0.5, 0.8)]
LOCATIONS = pd.DataFrame(
    {"joint": [f"j{i}" for i in range(9)], "x": [c[0] for c in CENTRES], "y": [c[1] for c in CENTRES]}
)


def _joint_images(n: int, seed: int):
    """Nine bright 'joints' on a dark background; in each image ONE joint carries a dark
    erosion notch of grade 0-3 (pixels). Target = the grade (the damage that changed)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    base = np.full((SIZE, SIZE), 0.1, np.float32)
    for cx, cy in CENTRES:
        base[(xx - cx * SIZE) ** 2 + (yy - cy * SIZE) ** 2 <= 9] = 0.8
    images = np.empty((n, SIZE, SIZE), np.float32)
    grades = rng.integers(0, 4, n)
    which = rng.integers(0, 9, n)
    for i in range(n):
        image = base + rng.normal(0, 0.03, (SIZE, SIZE)).astype(np.float32)
        g = grades[i]
        px, py = (int(c * SIZE) for c in CENTRES[which[i]])
        image[py - g : py + g, px - g : px + g] = 0.1
        images[i] = image
    return torch.from_numpy(images[:, None]), torch.from_numpy(grades.astype(np.float32)), which


def _tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 1),
        nn.Flatten(0),
    )


@pytest.fixture(scope="module")
def trained_cnn() -> nn.Module:
    torch.manual_seed(0)
    net = _tiny_cnn()
    x, y, _ = _joint_images(512, seed=0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(0, len(x), (32,), generator=gen)
        loss = ((net(x[idx]) - y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def test_gradcam_mass_lands_on_the_changed_joint_far_more_often_than_random(trained_cnn):
    x, grades, which = _joint_images(120, seed=1)
    keep = grades > 0
    cams = grad_cam(trained_cnn, x[keep])
    assert cams.shape == (int(keep.sum()), SIZE, SIZE)
    masses = [joint_mass(cam, LOCATIONS) for cam in cams]
    truth = [{f"j{w}"} for w in which[keep.numpy()]]
    result = hit_rate(masses, truth, k=1)
    assert result.random_hit_rate == pytest.approx(1 / 9)
    assert result.n_images == int(keep.sum())
    assert result.hit_rate >= 0.6


def test_gradcam_restores_training_mode_and_leaves_weights_untouched(trained_cnn):
    trained_cnn.train()
    trained_cnn.zero_grad(set_to_none=True)
    before = [p.detach().clone() for p in trained_cnn.parameters()]
    grad_cam(trained_cnn, _joint_images(4, seed=2)[0])
    assert trained_cnn.training
    assert all(p.grad is None for p in trained_cnn.parameters())  # no .grad side effect
    assert all(torch.equal(a, b) for a, b in zip(before, trained_cnn.parameters()))

    # a wrapper in training mode around a model in eval mode: each keeps its own mode
    trained_cnn.eval()
    wrapper = nn.Sequential(trained_cnn)
    grad_cam(wrapper, _joint_images(2, seed=3)[0], target_layer=trained_cnn[3])
    assert wrapper.training and not trained_cnn.training and not trained_cnn[0].training


def test_image_that_does_not_move_a_joint_forecast_gets_an_empty_map():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))

    class Forecast(nn.Module):
        """A 'sequence' forecast from two visits' images; the first visit is ignored."""

        def __init__(self):
            super().__init__()
            self.encoder = encoder

        def forward(self, images):
            emb = self.encoder(images).flatten(1)  # [2, 4]
            return emb[1].sum() + 0.0 * emb[0].sum()

    x = torch.rand(2, 1, SIZE, SIZE)
    cams = grad_cam(Forecast(), x)
    assert cams[0].max() == 0.0
    assert cams[1].max() > 0.0


def test_overlay_keeps_the_radiograph_where_the_map_is_zero_and_saves_a_png(tmp_path):
    image = np.linspace(0, 1, SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)
    cam = np.zeros_like(image)
    cam[10:14, 10:14] = 2.0
    rgb = overlay(image, cam)
    assert rgb.shape == (SIZE, SIZE, 3) and rgb.dtype == np.uint8
    grey = (image * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(rgb[0, :, 0], grey[0])  # untouched outside the hot spot
    assert not np.array_equal(rgb[12, 12], np.repeat(grey[12, 12], 3))
    path = save_png(rgb, tmp_path / "sub" / "overlay.png")
    with Image.open(path) as png:
        assert png.size == (SIZE, SIZE)
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary file left


def test_integrated_gradients_of_a_linear_forecast_are_weight_times_input():
    w = torch.tensor([2.0, -1.0, 0.5])
    x = torch.tensor([1.0, 3.0, -2.0])
    attr = integrated_gradients(lambda batch: batch @ w, x, baseline=torch.ones(3))
    torch.testing.assert_close(attr, w * (x - 1.0))


def test_integrated_gradients_add_up_to_the_forecast_difference():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1), nn.Flatten(0))
    x = torch.randn(5)
    attr = integrated_gradients(mlp, x, steps=64)
    expected = (mlp(x[None]) - mlp(torch.zeros(1, 5))).item()
    assert attr.sum().item() == pytest.approx(expected, abs=1e-3)


def test_visit_attributions_give_zero_to_an_ignored_visit_and_sum_to_the_forecast():
    torch.manual_seed(0)
    weights = torch.tensor([1.0, 0.0, 2.0])  # visit 2 (index 1) does not count

    def forecast(visits):  # [S, T=3, F=4] -> [S]
        return (torch.tanh(visits).sum(-1) * weights).sum(-1)

    visits = torch.randn(3, 4)
    per_visit = visit_attributions(forecast, visits, steps=64)
    assert per_visit.shape == (3,)
    assert per_visit[1] == 0.0
    assert per_visit.sum() == pytest.approx(forecast(visits[None]).item(), abs=1e-3)


def test_joint_mass_counts_the_window_around_each_joint():
    cam = np.zeros((40, 40), np.float32)
    cam[20, 20] = 3.0  # joint j4 at (0.5, 0.5)
    cam[8, 32] = 1.0  # joint j2 at (0.8, 0.2)
    mass = joint_mass(cam, LOCATIONS, half_width=0.05)
    assert mass["j4"] == pytest.approx(0.75)
    assert mass["j2"] == pytest.approx(0.25)
    assert mass.drop(["j2", "j4"]).eq(0).all()
    assert joint_mass(np.zeros((40, 40)), LOCATIONS).eq(0).all()


def test_hit_rate_random_baseline_is_exact_and_blank_maps_score_like_random():
    mass = pd.Series(np.linspace(1, 0, 9), index=[f"j{i}" for i in range(9)])
    exact = hit_rate([mass, mass], [{"j0"}, {"j8"}], k=3)
    assert exact.hit_rate == 0.5 and exact.precision == pytest.approx(1 / 6)
    assert exact.random_hit_rate == pytest.approx(1 / 3)  # 1 - C(8,3)/C(9,3)
    assert exact.random_precision == pytest.approx(1 / 9)
    blank = pd.Series(0.0, index=mass.index)
    noise = hit_rate([blank] * 600, [{"j0"}] * 600, k=3, seed=1)
    assert noise.hit_rate == pytest.approx(1 / 3, abs=0.06)
    assert hit_rate([mass], [set()]).n_images == 0


def test_progressing_joints_compare_erosion_plus_jsn_between_two_visits():
    scores = pd.DataFrame(
        {
            "patient_id": ["7"] * 6 + ["8"] * 2,
            "visit_date": ["2020-01-01"] * 3 + ["2021-01-01"] * 3 + ["2020-01-01", "2021-01-01"],
            "joint": ["hand_left_mcp2", "hand_left_ip", "hand_left_cmc3"] * 2 + ["hand_left_mcp2"] * 2,
            "erosion": [1, 0, np.nan, 2, 0, np.nan, 0, 5],
            "jsn": [0, np.nan, 1, 0, np.nan, 2, 0, 4],
        }
    )
    assert progressing_joints(scores, "7", "2020-01-01", "2021-01-01") == {
        "hand_left_mcp2",
        "hand_left_cmc3",
    }
    assert progressing_joints(scores, "7", "2020-01-01", "2021-01-01", min_increase=2) == set()
    assert progressing_joints(scores, "7", "2020-01-01", "2022-01-01") == set()
