"""Likelihood evaluation and the out-of-distribution report, in the library and
through `vae-tf evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vae_tf.cli import main
from vae_tf.evaluation import auroc, evaluate_likelihood, ood_images, ood_report


def _pairwise_auroc(pos, neg):
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_auroc_matches_pairwise_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, 6, size=37).astype(float)  # many ties
    neg = rng.integers(-2, 4, size=23).astype(float)
    assert auroc(pos, neg) == pytest.approx(_pairwise_auroc(pos, neg), abs=1e-12)
    assert auroc([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert auroc([0.0, 1.0], [2.0, 3.0]) == 0.0
    assert auroc([1.0, 1.0], [1.0]) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        auroc([], [1.0])


def test_ood_inputs_stay_in_the_binary_domain(tiny_model, heldout_binary):
    x, _ = heldout_binary
    sources = ood_images(tiny_model, x[:50], seed=0)
    assert set(np.unique(sources["uniform_noise"])) == {0.0, 1.0}
    assert sources["uniform_noise"].mean() == pytest.approx(0.5, abs=0.01)
    np.testing.assert_array_equal(sources["inverted"], 1.0 - x[:50])


def test_ood_report_separates_digits_from_noise(tiny_model, heldout_binary, bundled_splits):
    x, y = heldout_binary
    other = {"train_digits": x[100:150]}  # in-distribution "other" data: AUROC near 0.5
    report = ood_report(tiny_model, x[:100], y[:100], other=other, num_samples=20, seed=0)
    inside = report["in_distribution"]
    assert inside["num_images"] == 100 and -250 < inside["mean_log_prob"] < -80
    sources = report["sources"]
    assert set(sources) == {"uniform_noise", "inverted", "train_digits"}
    for name in ("uniform_noise", "inverted"):
        assert sources[name]["mean_log_prob"] < inside["mean_log_prob"] - 300
        assert sources[name]["auroc"] > 0.99
        assert sources[name]["num_images"] == 100
    assert 0.3 < sources["train_digits"]["auroc"] < 0.7
    json.dumps(report)  # numbers only, no arrays


def test_ood_report_marginalizes_labels_of_a_conditional_model(tiny_conditional_model, heldout_binary):
    x, y = heldout_binary
    report = ood_report(tiny_conditional_model, x[:20], y[:20], num_samples=10)
    assert report["labels_marginalized"] is True
    assert report["sources"]["uniform_noise"]["auroc"] > 0.99
    # log p(x) = log mean_y p(x|y) is at least log p(x|true y) - log 10.
    conditional = evaluate_likelihood(tiny_conditional_model, x[:20], y[:20], num_samples=10)
    assert report["in_distribution"]["mean_log_prob"] >= -conditional["iwae_nll"] - np.log(10) - 1.0


def test_evaluate_likelihood_iwae_is_tighter_than_elbo(tiny_model, heldout_binary):
    x, y = heldout_binary
    result = evaluate_likelihood(tiny_model, x[:100], y[:100], num_samples=100, batch_size=50)
    assert result["iwae_nll"] < result["neg_elbo"]
    assert 0 < result["iwae_nll_stderr"] < 5
    assert result["num_images"] == 100 and result["iwae_samples"] == 100


def test_cli_evaluate_with_ood_prints_one_json_line(tiny_run, capsys):
    code = main([
        "evaluate", tiny_run, "--data", "bundled", "--split", "test", "--iwae-samples", "50",
        "--max-images", "100", "--ood", "--json",
    ])
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert result["iwae_nll"] < result["neg_elbo"]
    assert result["ood"]["sources"]["uniform_noise"]["auroc"] > 0.99
    assert result["ood"]["sources"]["inverted"]["auroc"] > 0.99
    assert result["ood"]["iwae_samples"] == 50
