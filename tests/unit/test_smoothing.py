"""One-Euro (online) and Savitzky-Golay (offline) keypoint smoothing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mspn_cli.errors import InputError
from mspn_cli.tracking import OneEuroFilter, OneEuroSmoother, load_tracking_config, savgol_coefficients, savgol_smooth
from mspn_cli.config import OneEuroSettings
from tests.unit.test_tracking import pose

# --------------------------------------------------------------------------- One-Euro


def test_one_euro_matches_hand_computed_steps():
    # min_cutoff 1 Hz, beta 0.5, d_cutoff 2 Hz; samples 0, 1, 1.5, 1.5 at 0, 0.1, 0.2, 0.35 s.
    # alpha(f, dt) = 1 / (1 + 1 / (2 pi f dt))
    # step 1, dt 0.1: alpha_d = 1 / (1 + 1 / (0.4 pi)) = 0.556863; speed = alpha_d * (1 - 0) / 0.1 = 5.568627
    #   cutoff = 1 + 0.5 * 5.568627 = 3.784314; alpha = 0.703945; x = 0.703945 * 1 = 0.703945
    # step 2, dt 0.1: speed = 0.556863 * (1.5 - 0.703945) / 0.1 + 0.443137 * 5.568627 = 6.900598
    #   alpha = alpha(1 + 3.450299, 0.1) = 0.736579; x = 0.736579 * 1.5 + 0.263421 * 0.703945 = 1.290303
    # step 3, dt 0.15: alpha_d = 1 / (1 + 1 / (0.6 pi)) = 0.653374
    #   speed = 0.653374 * (1.5 - 1.290303) / 0.15 + 0.346626 * 6.900598 = 3.305331
    #   alpha = alpha(2.652666, 0.15) = 0.714292; x = 0.714292 * 1.5 + 0.285708 * 1.290303 = 1.440088
    one_euro = OneEuroFilter(min_cutoff=1.0, beta=0.5, d_cutoff=2.0)
    outputs = [float(one_euro(np.array([x]), t)[0]) for x, t in [(0.0, 0.0), (1.0, 0.1), (1.5, 0.2), (1.5, 0.35)]]
    assert outputs == pytest.approx([0.0, 0.703945, 1.290303, 1.440088], abs=1e-6)
    assert math.isclose(1 / (1 + 1 / (2 * math.pi * 2.0 * 0.1)), 0.556863, abs_tol=1e-6)


def test_one_euro_with_beta_zero_is_a_fixed_low_pass():
    one_euro = OneEuroFilter(min_cutoff=2.0, beta=0.0, d_cutoff=1.0)
    alpha = 1 / (1 + 1 / (2 * math.pi * 2.0 / 30))
    expected, estimate = [], 0.0
    for step, value in enumerate([0.0, 3.0, -1.0, 4.0, 4.0]):
        estimate = value if step == 0 else alpha * value + (1 - alpha) * estimate
        expected.append(estimate)
        assert float(one_euro(np.array(value), step / 30)) == pytest.approx(estimate)


def test_one_euro_rejects_time_going_backwards():
    one_euro = OneEuroFilter(1.0, 0.0, 1.0)
    one_euro(np.zeros(2), 1.0)
    with pytest.raises(InputError, match="does not come after"):
        one_euro(np.zeros(2), 1.0)


def walking_sequence(frames=300, fps=30.0, height=200.0, noise=2.0, seed=0):
    """True and noisy poses of a person walking right at 0.75 heights/s, swaying, arms and legs swinging."""
    rng = np.random.default_rng(seed)
    times = np.arange(frames) / fps
    truth = np.empty((frames, 17, 3))
    for f, t in enumerate(times):
        cx = 100 + 150 * t + 20 * np.sin(2 * np.pi * 0.7 * t)
        cy = 300 + 10 * np.sin(2 * np.pi * 1.0 * t)
        truth[f], _ = pose(cx, cy, height)
        swing = 30 * np.sin(2 * np.pi * 1.0 * t) * np.array([1, -1, 1.5, -1.5])
        truth[f, 7:11, 0] += swing  # elbows, wrists
        truth[f, 13:17, 0] += swing  # knees, ankles
    noisy = truth.copy()
    noisy[:, :, :2] += rng.normal(0, noise, noisy[:, :, :2].shape)
    return times, truth, noisy


def jitter(poses, truth):
    """RMS frame-to-frame displacement error: the wobble a viewer sees."""
    return float(np.sqrt(((np.diff(poses[:, :, :2], axis=0) - np.diff(truth[:, :, :2], axis=0)) ** 2).mean()))


def error(poses, truth):
    return float(np.sqrt(((poses[:, :, :2] - truth[:, :, :2]) ** 2).mean()))


@pytest.mark.parametrize("height, noise", [(200.0, 2.0), (400.0, 4.0), (120.0, 2.0)])
def test_one_euro_reduces_jitter_without_more_error_than_raw(height, noise):
    times, truth, noisy = walking_sequence(height=height, noise=noise)
    smoother = OneEuroSmoother(load_tracking_config().smoothing.oneeuro)
    smoothed = np.stack([smoother.update([7], noisy[f][None], t)[0] for f, t in enumerate(times)])
    assert jitter(smoothed, truth) < 0.75 * jitter(noisy, truth)
    assert error(smoothed, truth) < error(noisy, truth)
    assert np.array_equal(smoothed[:, :, 2], noisy[:, :, 2])  # scores pass through


def test_one_euro_still_person_converges_to_the_truth():
    times, truth, noisy = walking_sequence(frames=200, noise=2.0)
    still_truth = np.repeat(truth[:1], len(times), axis=0)
    still = still_truth + (noisy - truth)
    smoother = OneEuroSmoother(load_tracking_config().smoothing.oneeuro)
    smoothed = np.stack([smoother.update([1], still[f][None], t)[0] for f, t in enumerate(times)])
    assert jitter(smoothed[50:], still_truth[50:]) < 0.6 * jitter(still[50:], still_truth[50:])
    assert error(smoothed[50:], still_truth[50:]) < 0.8 * error(still[50:], still_truth[50:])


def test_smoother_tracks_are_independent_and_untracked_poses_pass_through():
    settings = OneEuroSettings(min_cutoff=1.0, beta=0.0, d_cutoff=1.0, forget_after=2)
    smoother = OneEuroSmoother(settings)
    a, _ = pose(100, 100, 100)
    b, _ = pose(400, 100, 100)
    smoother.update([1, 2], np.stack([a, b]), 0.0)
    moved = np.stack([a + [5, 0, 0], b, a + [50, 0, 0]])
    out = smoother.update([1, 2, 0], moved, 0.1)
    assert 0 < out[0, 0, 0] - a[0, 0] < 5  # track 1 filtered towards its new place
    assert np.allclose(out[1], b)  # track 2 did not move
    assert np.array_equal(out[2], moved[2])  # untracked: as given
    with pytest.raises(InputError, match="twice"):
        smoother.update([1, 1], np.stack([a, a]), 0.2)
    smoother.update([2], b[None], 0.3)
    smoother.update([2], b[None], 0.4)
    # Track 1 unseen for forget_after updates: it starts afresh (its first sample passes through).
    assert np.allclose(smoother.update([1], (a + [80, 0, 0])[None], 0.5)[0], a + [80, 0, 0])


# --------------------------------------------------------------------------- Savitzky-Golay


def test_savgol_coefficients_are_the_classic_tables():
    assert savgol_coefficients(5, 2) * 35 == pytest.approx([-3, 12, 17, 12, -3])
    assert savgol_coefficients(7, 2) * 21 == pytest.approx([-2, 3, 6, 7, 6, 3, -2])
    assert savgol_coefficients(5, 0) == pytest.approx([0.2] * 5)
    assert savgol_coefficients(1, 0) == pytest.approx([1.0])  # a window of one sample changes nothing
    for window, order in ((4, 2), (0, 0), (-1, 0), (3, 3)):
        with pytest.raises(InputError):
            savgol_coefficients(window, order)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_savgol_is_exact_on_a_polynomial_path(order):
    rng = np.random.default_rng(order)
    positions = np.array([0, 1, 2, 3, 5, 6, 7, 10, 11, 12, 13, 14, 15, 16, 20, 21])  # with gaps
    times = positions / 25.0 + rng.uniform(-0.005, 0.005, len(positions))  # jittery timestamps
    coefficients = rng.normal(0, 50, (order + 1, 17, 2))
    path = sum(coefficients[p] * times[:, None, None] ** p for p in range(order + 1))
    weights = rng.uniform(0.2, 2.0, (len(positions), 17))
    smoothed = savgol_smooth(positions, times, path, weights, window=9, order=order)
    assert np.allclose(smoothed, path, atol=1e-6)


def test_savgol_weights_by_score_and_reduces_noise():
    rng = np.random.default_rng(0)
    positions = np.arange(60)
    times = positions / 30.0
    truth = np.stack([100 + 90 * times, 200 - 30 * times], axis=-1)[:, None, :].repeat(17, axis=1)
    noisy = truth + rng.normal(0, 2.0, truth.shape)
    weights = np.ones((60, 17))
    assert error(savgol_smooth(positions, times, noisy, weights, 9, 2), truth) < 0.7 * error(noisy, truth)

    wild = noisy.copy()
    wild[30, 4] += [80.0, -60.0]  # one wild joint
    trusted = savgol_smooth(positions, times, wild, weights, 9, 2)
    weights[30, 4] = 1e-4  # that the pose estimator was unsure of
    doubted = savgol_smooth(positions, times, wild, weights, 9, 2)
    weights[30, 4] = 0.0
    without = savgol_smooth(positions, times, noisy, weights, 9, 2)
    assert np.abs(trusted[30, 4] - truth[30, 4]).max() > 10.0
    assert np.abs(doubted[30, 4] - without[30, 4]).max() < 0.05


def test_savgol_keeps_joints_without_weight_and_short_tracks():
    positions = np.array([0, 1, 2])
    path = np.arange(3 * 17 * 2, dtype=float).reshape(3, 17, 2) ** 1.5
    weights = np.ones((3, 17))
    weights[:, 0] = 0.0
    smoothed = savgol_smooth(positions, positions / 30.0, path, weights, window=9, order=2)
    assert np.array_equal(smoothed[:, 0], path[:, 0])
    single = savgol_smooth([4], [0.1], path[:1], weights[:1], window=9, order=2)
    assert np.allclose(single[0, 1:], path[0, 1:])
