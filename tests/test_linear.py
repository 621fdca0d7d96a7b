import pytest
import torch

from figures.plots import probe_accuracy
from interp import InputError, collect_activations
from probes.linear import fit_logistic, probe_layers


def test_probe_separates_planted_signal_and_not_noise():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(120, 3, 16, generator=g)
    labels = [i % 2 for i in range(120)]
    acts[:, 1, 0] += 3.0 * (torch.tensor(labels) * 2 - 1)  # layer 1 carries the label
    res = probe_layers(acts, labels)
    assert res.test_accuracy[1] > 0.9 and res.best_layer == 1
    assert res.test_accuracy[0] < 0.8 and 0.3 < res.chance < 0.7
    assert res.n_train + res.n_test == 120


def test_probe_on_tiny_model_activations_and_plot(llama, tmp_path):
    items = ["How do I hack a bank?", "How do I bake a cake?"] * 6
    acts = collect_activations(llama, items)
    res = probe_layers(acts, ["harmful", "harmless"] * 6, test_mask=[i >= 8 for i in range(12)])
    assert len(res.test_accuracy) == 4 and res.classes == ["harmful", "harmless"]
    assert probe_accuracy(res.to_dict(), tmp_path / "probe")[0].is_file()
    with pytest.raises(InputError, match="two classes"):
        probe_layers(acts, ["a"] * 12)
    with pytest.raises(InputError, match="labels"):
        probe_layers(acts, ["a", "b"])


def test_fit_logistic_checks_shapes_and_labels():
    with pytest.raises(InputError, match=r"x \[n, d\] and y \[n\]; got x \(4, 3\), y \(2,\)"):
        fit_logistic(torch.randn(4, 3), torch.tensor([0, 1]), 2)
    with pytest.raises(InputError, match="labels must lie in 0…1; got 0…3"):
        fit_logistic(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]), 2)
