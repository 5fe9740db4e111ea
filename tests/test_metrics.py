"""Pair statistics (SPEC §2): functional and streaming forms against an independent reference."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from stbias.errors import StbiasError
from stbias.metrics import PairStatistics, score_pairs


def reference(z1, z2, factor, lam=0.5):
    """Two-pass numpy transcription of SPEC §2, written independently of the library."""
    z1, z2, factor = np.asarray(z1, float), np.asarray(z2, float), np.asarray(factor)
    allx = np.concatenate([z1, z2])
    big_v = ((allx - allx.mean(0)) ** 2).mean(0).sum()
    out = {"scores": {}, "unit": {}, "dead": np.zeros(z1.shape[1], bool)}
    for f in ("dynamic", "static"):
        a, b = z1[factor == f], z2[factor == f]
        m = 0.5 * (a.mean(0) + b.mean(0))
        cov = ((a - m) * (b - m)).mean(0)
        both = np.concatenate([a, b])
        var = ((both - both.mean(0)) ** 2).mean(0)
        out["scores"][f] = cov.sum() / big_v
        dead = var == 0
        out["dead"] |= dead
        out["unit"][f] = np.where(dead, 0.0, cov / np.where(dead, 1.0, var))
    for f in ("dynamic", "static"):
        out["unit"][f] = np.where(out["dead"], 0.0, out["unit"][f])
    s = np.array([out["scores"]["dynamic"], out["scores"]["static"], 1.0])
    p = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
    n = z1.shape[1]
    d, st = int(np.floor(p[0] * n)), int(np.floor(p[1] * n))
    out["dims"] = {"dynamic": d, "static": st, "residual": n - d - st}
    ad, as_ = out["unit"]["dynamic"] > lam, out["unit"]["static"] > lam
    out["units"] = {
        "dynamic": int((ad & ~as_).sum()),
        "static": int((as_ & ~ad).sum()),
        "joint": int((ad & as_).sum()),
        "residual": int((~ad & ~as_).sum()),
        "dead": int(out["dead"].sum()),
    }
    return out


def correlated_pairs(n=400, c=16, seed=0, offset=0.0, scale=1.0):
    """Pairs whose units share varying amounts of signal, alternating factors."""
    rng = np.random.default_rng(seed)
    factor = np.array(["dynamic", "static"] * (n // 2))
    shared = rng.normal(size=(n, c))
    mix_d = np.linspace(0.0, 1.0, c)
    mix_s = mix_d[::-1]
    mix = np.where(factor[:, None] == "dynamic", mix_d, mix_s)
    z1 = mix * shared + (1 - mix) * rng.normal(size=(n, c))
    z2 = mix * shared + (1 - mix) * rng.normal(size=(n, c))
    return offset + scale * z1, offset + scale * z2, factor


def assert_matches_reference(res, ref, rtol=1e-9):
    for f in ("dynamic", "static"):
        np.testing.assert_allclose(res["scores"][f], ref["scores"][f], rtol=rtol, atol=0)
        np.testing.assert_allclose(res["unit_scores"][f], ref["unit"][f], rtol=rtol, atol=1e-12)
    assert res["dims"] == ref["dims"]
    assert res["units"] == ref["units"]


@pytest.mark.parametrize("offset,scale", [(0.0, 1.0), (1e6, 1e-3), (-3.0, 50.0)])
def test_functional_matches_two_pass_reference(offset, scale):
    z1, z2, factor = correlated_pairs(offset=offset, scale=scale)
    res = score_pairs(z1, z2, factor, lam=0.5)
    assert_matches_reference(res, reference(z1, z2, factor, lam=0.5))
    assert res["n_pairs"] == {"dynamic": 200, "static": 200}
    assert sum(res["dims"].values()) == 16
    assert res["percent"]["dynamic"] == pytest.approx(100 * res["dims"]["dynamic"] / 16)
    assert sum(v for k, v in res["units"].items() if k != "dead") == 16


def test_identical_static_members_score_one():
    rng = np.random.default_rng(1)
    z1 = rng.normal(size=(300, 8))
    z2 = rng.normal(size=(300, 8))
    factor = np.array(["static"] * 150 + ["dynamic"] * 150)
    z2[:150] = z1[:150]
    res = score_pairs(z1, z2, factor)
    np.testing.assert_allclose(res["unit_scores"]["static"], 1.0, rtol=1e-12)
    assert res["units"]["static"] == 8


def test_independent_members_score_near_zero():
    rng = np.random.default_rng(2)
    z1, z2 = rng.normal(size=(4000, 32)), rng.normal(size=(4000, 32))
    factor = ["dynamic", "static"] * 2000
    res = score_pairs(z1, z2, factor)
    assert abs(res["scores"]["dynamic"]) < 0.02 and abs(res["scores"]["static"]) < 0.02
    assert np.abs(res["unit_scores"]["dynamic"]).max() < 0.1
    assert res["units"]["residual"] == 32


def test_hand_built_units_land_in_each_class():
    rng = np.random.default_rng(3)
    n = 500
    factor = np.array(["dynamic"] * n + ["static"] * n)
    x = rng.normal(size=(2 * n, 5))
    y = rng.normal(size=(2 * n, 5))
    z1, z2 = x.copy(), y.copy()
    is_dyn = factor == "dynamic"
    z2[is_dyn, 0] = z1[is_dyn, 0]  # unit 0 shares only the dynamic factor
    z2[~is_dyn, 1] = z1[~is_dyn, 1]  # unit 1 only the static
    z2[:, 2] = z1[:, 2]  # unit 2 both
    z1[:, 4] = z2[:, 4] = 7.25  # unit 4 is a constant channel
    res = score_pairs(z1, z2, factor)
    assert res["units"] == {"dynamic": 1, "static": 1, "joint": 1, "residual": 2, "dead": 1}
    assert res["unit_scores"]["dynamic"][4] == 0.0 and res["unit_scores"]["static"][4] == 0.0
    assert np.isfinite(res["scores"]["dynamic"]) and np.isfinite(res["scores"]["static"])


def test_tie_at_lambda_counts_as_not_above():
    # about the first value these integer features give s_static = 0.5 and s_dynamic = 0 exactly
    a = np.array([1, 1, 1, 1, -1, -1, -1, -1], float)
    b = np.array([1, 1, 1, -1, -1, -1, -1, 1], float)
    c = np.array([1, -1, 1, -1, 1, -1, 1, -1], float)
    d = np.array([1, 1, -1, -1, 1, 1, -1, -1], float)
    z1 = np.concatenate([a, c])[:, None]
    z2 = np.concatenate([b, d])[:, None]
    factor = ["static"] * 8 + ["dynamic"] * 8
    res = score_pairs(z1, z2, factor, lam=0.5)
    assert res["unit_scores"]["static"][0] == 0.5
    assert res["units"]["residual"] == 1 and res["units"]["static"] == 0
    below = score_pairs(z1, z2, factor, lam=0.4999)
    assert below["units"]["static"] == 1
    at_zero = score_pairs(z1, z2, factor, lam=0.0)
    assert res["unit_scores"]["dynamic"][0] == 0.0 and at_zero["units"]["static"] == 1


def test_mean_corr_estimator_is_mean_of_pearson_correlations():
    z1, z2, factor = correlated_pairs(n=600, c=6, seed=4)
    res = score_pairs(z1, z2, factor, estimator="mean_corr")
    for f in ("dynamic", "static"):
        sel = factor == f
        r = [np.corrcoef(z1[sel, i], z2[sel, i])[0, 1] for i in range(6)]
        np.testing.assert_allclose(res["scores"][f], np.mean(r), rtol=1e-9)
    pooled = score_pairs(z1, z2, factor)
    assert res["units"] == pooled["units"]
    assert res["scores"] != pooled["scores"]


def test_streaming_uneven_batches_equal_functional():
    z1, z2, factor = correlated_pairs(n=500, c=12, seed=5, offset=1e6, scale=1e-3)
    metric = PairStatistics(12, bootstrap=50, seed=9)
    bounds = [0, 1, 8, 21, 22, 100, 257, 400, 500]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        metric.update(torch.from_numpy(z1[lo:hi]), torch.from_numpy(z2[lo:hi]), list(factor[lo:hi]))
    got = metric.compute(lam=0.3)
    want = score_pairs(z1, z2, factor, lam=0.3, bootstrap=50, seed=9)
    assert_matches_reference(got, reference(z1, z2, factor, lam=0.3))
    for key in ("scores", "dims", "units", "n_pairs"):
        assert got[key] == pytest.approx(want[key], rel=1e-9)
    assert got["ci"]["scores"]["dynamic"] == pytest.approx(
        want["ci"]["scores"]["dynamic"], rel=1e-9
    )
    assert got["ci"]["units"] == want["ci"]["units"]


def test_two_shards_merged_equal_one():
    z1, z2, factor = correlated_pairs(n=400, c=10, seed=6, offset=1e6, scale=1e-3)
    one = PairStatistics(10, bootstrap=20)
    one.update(torch.from_numpy(z1), torch.from_numpy(z2), list(factor), ids=np.arange(400))
    left, right = PairStatistics(10, bootstrap=20), PairStatistics(10, bootstrap=20)
    left.update(
        torch.from_numpy(z1[:150]),
        torch.from_numpy(z2[:150]),
        list(factor[:150]),
        ids=np.arange(150),
    )
    # the second shard starts elsewhere, so its shift differs from the first's
    right.update(
        torch.from_numpy(z1[150:]),
        torch.from_numpy(z2[150:]),
        list(factor[150:]),
        ids=np.arange(150, 400),
    )
    assert not torch.equal(left.shift, right.shift)
    left.merge_state(right)
    a, b = left.compute(), one.compute()
    assert a["scores"] == pytest.approx(b["scores"], rel=1e-9)
    assert a["units"] == b["units"] and a["dims"] == b["dims"]
    assert a["ci"]["scores"]["static"] == pytest.approx(b["ci"]["scores"]["static"], rel=1e-9)
    empty = PairStatistics(10, bootstrap=20)
    empty.merge_state(one)
    assert empty.compute()["scores"] == pytest.approx(b["scores"], rel=1e-12)


def test_bootstrap_interval_covers_estimate_and_shrinks_with_data():
    z1, z2, factor = correlated_pairs(n=200, c=8, seed=7)
    small = score_pairs(z1, z2, factor, bootstrap=200, seed=1)
    z1b, z2b, factorb = correlated_pairs(n=3200, c=8, seed=7)
    big = score_pairs(z1b, z2b, factorb, bootstrap=200, seed=1)
    for res in (small, big):
        lo, hi = res["ci"]["scores"]["static"]
        assert lo <= res["scores"]["static"] <= hi
        assert res["ci"]["level"] == 0.95 and res["ci"]["replicates"] == 200
    width = lambda r: np.diff(r["ci"]["scores"]["dynamic"])[0]  # noqa: E731
    assert width(big) < 0.5 * width(small)
    again = score_pairs(z1, z2, factor, bootstrap=200, seed=1)
    assert again["ci"] == small["ci"]
    other = score_pairs(z1, z2, factor, bootstrap=200, seed=2)
    assert other["ci"] != small["ci"]


def test_save_load_resume_and_rethreshold(tmp_path):
    z1, z2, factor = correlated_pairs(n=300, c=6, seed=8)
    full = PairStatistics(6, bootstrap=10)
    full.update(torch.from_numpy(z1), torch.from_numpy(z2), list(factor))
    part = PairStatistics(6, bootstrap=10)
    part.update(torch.from_numpy(z1[:120]), torch.from_numpy(z2[:120]), list(factor[:120]))
    part.save_state(tmp_path / "partial.pt")
    resumed = PairStatistics.from_file(tmp_path / "partial.pt")
    resumed.update(torch.from_numpy(z1[120:]), torch.from_numpy(z2[120:]), list(factor[120:]))
    for lam in (0.1, 0.5, 0.9):
        a, b = resumed.compute(lam=lam), full.compute(lam=lam)
        assert a["units"] == b["units"] and a["lam"] == lam
        assert a["ci"]["units"] == b["ci"]["units"]
    assert [p.name for p in tmp_path.iterdir()] == ["partial.pt"]
    with pytest.raises(StbiasError, match="units, bootstrap, seed"):
        PairStatistics(7, bootstrap=10).load_state(tmp_path / "partial.pt")


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: score_pairs(np.ones((3, 2)), np.ones((3, 3)), "static"), "differ in shape"),
        (lambda: score_pairs(np.ones((3, 2, 1)), np.ones((3, 2, 1)), "static"), r"\(n, C\)"),
        (lambda: score_pairs([[0.0, np.nan]] * 4, [[0.0, 1.0]] * 4, "static"), "non-finite"),
        (lambda: score_pairs([[0.0], [np.inf]], [[0.0], [1.0]], "static"), "non-finite"),
        (lambda: score_pairs(np.eye(4), np.eye(4), ["static"] * 3 + ["dynamic"]), "1 pair"),
        (lambda: score_pairs(np.eye(4), np.eye(4), "static"), "'dynamic' has 0 pair"),
        (lambda: score_pairs(np.eye(4), np.eye(4), "motion"), "unknown factor 'motion'"),
        (
            lambda: score_pairs(np.eye(4), np.eye(4), ["static", "dynamic"] * 2, lam=1.0),
            r"\(-1, 1\)",
        ),
        (
            lambda: score_pairs(np.eye(4), np.eye(4), ["static", "dynamic"] * 2, lam=-1.5),
            "lam=-1.5",
        ),
        (
            lambda: score_pairs(np.eye(4), np.eye(4), ["static", "dynamic"] * 2, estimator="x"),
            "pooled",
        ),
        (lambda: PairStatistics(4).update(torch.ones(2, 3), torch.ones(2, 3), "static"), "3 units"),
    ],
)
def test_bad_input_raises_a_named_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_all_dead_layer_gives_zero_scores_not_nan():
    z = np.full((10, 3), 2.5)
    res = score_pairs(z, z, ["static", "dynamic"] * 5)
    assert res["units"]["dead"] == 3 and res["units"]["residual"] == 3
    assert res["scores"] == {"dynamic": 0.0, "static": 0.0}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out_dir):
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        z1, z2, factor = correlated_pairs(n=600, c=9, seed=11, offset=1e6, scale=1e-3)
        metric = PairStatistics(9, bootstrap=30, seed=3)
        idx = np.arange(rank, 600, world)  # a DistributedSampler-style split
        for chunk in np.array_split(idx, 5):
            metric.update(
                torch.from_numpy(z1[chunk]),
                torch.from_numpy(z2[chunk]),
                list(factor[chunk]),
                ids=chunk,
            )
        res = metric.compute(lam=0.4)
        f64 = torch.float64
        torch.save(
            {
                "scores": torch.tensor(
                    [res["scores"]["dynamic"], res["scores"]["static"]], dtype=f64
                ),
                "units": torch.tensor(list(res["units"].values())),
                "dims": torch.tensor(list(res["dims"].values())),
                "ci": torch.tensor(
                    res["ci"]["scores"]["dynamic"] + res["ci"]["scores"]["static"], dtype=f64
                ),
                "n": torch.tensor(list(res["n_pairs"].values())),
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_ddp_equals_single_process(tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    z1, z2, factor = correlated_pairs(n=600, c=9, seed=11, offset=1e6, scale=1e-3)
    single = score_pairs(z1, z2, factor, lam=0.4, bootstrap=30, seed=3)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        np.testing.assert_allclose(
            got["scores"].numpy(),
            [single["scores"]["dynamic"], single["scores"]["static"]],
            rtol=1e-9,
        )
        assert got["units"].tolist() == list(single["units"].values())
        assert got["dims"].tolist() == list(single["dims"].values())
        assert got["n"].tolist() == [300, 300]
        np.testing.assert_allclose(
            got["ci"].numpy(),
            single["ci"]["scores"]["dynamic"] + single["ci"]["scores"]["static"],
            rtol=1e-9,
        )


# Scene bias (Byvshev et al., Appendix A): known answers on hand-made predictions ---------------


def test_common_place_is_the_most_frequent_prediction_and_its_share():
    from stbias.metrics.scene import common_place

    assert common_place([3, 1, 1, 3, 1]) == (1, 0.6)
    assert common_place([7]) == (7, 1.0)
    assert common_place(np.array([[0, 4], [4, 4]])) == (4, 0.75)


def test_a_tie_goes_to_the_lowest_place_index_whatever_the_frame_order():
    from stbias.metrics.scene import common_place

    assert common_place([5, 5, 2, 2, 9]) == (2, 0.4)
    assert common_place([2, 9, 5, 2, 5]) == (2, 0.4)
    assert common_place([9, 5, 9, 5]) == (5, 0.5)


def test_bad_place_predictions_are_one_line_errors():
    from stbias.metrics.scene import common_place, common_places, score_curve

    for call, text in (
        (lambda: common_place([]), "at least one frame"),
        (lambda: common_place([1, -1]), ">= 0"),
        (lambda: score_curve([], [0.5]), "at least one video"),
        (lambda: common_places([]), "at least one video"),
    ):
        with pytest.raises(StbiasError, match=text):
            call()


def test_the_score_curve_is_the_share_of_videos_scoring_at_least_x():
    from stbias.metrics.scene import score_curve

    scores = [1.0, 0.5, 0.25, 0.8, 0.25]
    curve = score_curve(scores, [0.0, 0.25, 0.3, 0.5, 0.8, 1.0])
    np.testing.assert_allclose(curve, [1.0, 1.0, 0.6, 0.6, 0.4, 0.2])
    # a score computed as a share of frames meets its own threshold: 1/3 >= 1/3
    assert score_curve([1 / 3], [1 / 3])[0] == 1.0


def test_common_places_are_the_shortest_head_holding_more_than_half_the_videos():
    from stbias.metrics.scene import common_places

    # 10 videos: place 4 holds 5 (half, not more), with place 1 (3) they hold 8
    dominant = [4] * 5 + [1] * 3 + [0] * 2
    assert common_places(dominant) == [4, 1]
    # one place holding 6 of 10 is common alone
    assert common_places([2] * 6 + [0, 1, 3, 5]) == [2]
    # equal counts: the lower index first (4 videos, places 0..3 one each: three are common)
    assert common_places([3, 2, 1, 0]) == [0, 1, 2]


def test_the_linear_probe_learns_separable_features_and_repeats_itself():
    from stbias.metrics.scene import linear_probe

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 4
    train_y, test_y = np.repeat(np.arange(3), 20), np.repeat(np.arange(3), 10)
    train_x = centres[train_y] + rng.normal(size=(60, 8))
    test_x = centres[test_y] + rng.normal(size=(30, 8))
    fit = linear_probe(train_x, train_y, test_x, test_y, seed=3)
    predictions, acc = fit.predictions, fit.accuracy
    assert fit.converged and acc > 0.9 and acc == (predictions == test_y).mean()
    # the classifier it returns gives its predictions
    logits = (test_x - fit.mean) / fit.std @ fit.weight.T + fit.bias
    assert (logits.argmax(1) == predictions).all()
    again = linear_probe(train_x, train_y, test_x, test_y, seed=3)
    assert again.accuracy == acc and (again.predictions == predictions).all()
    # two classes (scikit-learn fits one logit) and a class with no training row
    two = linear_probe(train_x[train_y != 1], train_y[train_y != 1], test_x, test_y)
    assert two.weight.shape == (3, 8) and two.bias[1] == -np.inf
    logits = (test_x - two.mean) / two.std @ two.weight.T + two.bias
    assert (logits.argmax(1) == two.predictions).all() and set(two.predictions) == {0, 2}
    # shuffled labels: nothing to learn, chance-level accuracy
    chance = linear_probe(train_x, rng.permutation(train_y), test_x, test_y, seed=3).accuracy
    assert chance < 0.7
    with pytest.raises(StbiasError, match="one width"):
        linear_probe(train_x, train_y, test_x[:, :4], test_y)
    with pytest.raises(StbiasError, match="tol > 0"):
        linear_probe(train_x, train_y, test_x, test_y, tol=0.0)
    # a fit stopped by max_iter says so
    assert not linear_probe(train_x, train_y, test_x, test_y, max_iter=2).converged


def test_the_linear_probe_is_the_regularised_optimum_scipy_finds():
    from scipy.optimize import minimize
    from scipy.special import logsumexp

    from stbias.metrics.scene import linear_probe

    # 18 classes of correlated, rectified features (as pooled CNN features are): a fit stopped
    # at scikit-learn's default tolerance (1e-4) predicts one test row otherwise than the optimum
    rng = np.random.default_rng(0)
    classes, width, rank = 18, 128, 16
    basis, centres = rng.normal(size=(rank, width)), rng.normal(size=(classes, rank))

    def draw(per_class):
        y = np.repeat(np.arange(classes), per_class)
        z = centres[y] + rng.normal(size=(len(y), rank))
        x = np.maximum(z @ basis, 0) * 0.05 + 0.01 * rng.normal(size=(len(y), width))
        return x.astype(np.float32), y

    (train_x, train_y), (test_x, test_y) = draw(32), draw(16)
    fit = linear_probe(train_x, train_y, test_x, test_y)
    assert fit.converged

    # the reference: the L2-regularised multinomial log-loss (sum over images + |W|^2 / 2C, C=1,
    # bias free), on the same standardisation, minimised by scipy to a gradient of 1e-10
    mean, std = train_x.mean(0, dtype=np.float64), train_x.std(0, dtype=np.float64)
    x, target = (train_x - mean) / std, np.eye(classes)[train_y]

    def loss(w):
        weights, bias = w[:-classes].reshape(width, classes), w[-classes:]
        log_p = x @ weights + bias
        log_p = log_p - logsumexp(log_p, axis=1, keepdims=True)
        residual = np.exp(log_p) - target
        value = -(target * log_p).sum() + 0.5 * (weights**2).sum()
        return value, np.concatenate([(x.T @ residual + weights).ravel(), residual.sum(0)])

    w = minimize(
        loss,
        np.zeros(width * classes + classes),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-10, "ftol": 0.0, "maxiter": 50000},
    ).x
    scores = ((test_x - mean) / std) @ w[:-classes].reshape(width, classes) + w[-classes:]
    assert (fit.predictions == scores.argmax(1)).all()
