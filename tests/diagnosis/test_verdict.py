"""The verdict rules, on hand-made statistics and on the shipped experiments (real data)."""

from __future__ import annotations

import pytest

from dnntrick.diagnosis.hooks import probe_spec
from dnntrick.diagnosis.verdict import Context, LayerStats, diagnose, spec_notes
from dnntrick.spec.config import load_spec, validate
from tests.conftest import REPO


def _layers(ratios, out_grads=None, stds=None, dead=None, saturated=None) -> list[LayerStats]:
    n = len(ratios)
    out_grads = out_grads or [1.0] * n
    stds = stds or [1.0] * n
    layers = [
        LayerStats(
            f"hidden{i + 1}",
            100,
            "relu",
            mean=0.0,
            std=stds[i],
            grad=r,
            ratio=r,
            out_grad=out_grads[i],
            dead=(dead or {}).get(i),
            saturated=(saturated or {}).get(i),
        )
        for i, r in enumerate(ratios)
    ]
    layers.append(LayerStats("outputs", 10, "other", mean=0.0, std=1.0, grad=1.0, ratio=1.0,
                             out_grad=1.0))  # fmt: skip
    return layers


CTX = Context(activation="relu", family="relu", init="he_normal", depth=4, fan_in=100)


def test_healthy_when_nothing_crosses_a_line():
    d = diagnose(_layers([5.0, 2.0, 1.0, 0.5]), CTX)
    assert d.verdict == "healthy" and not d.findings and not d.notes


def test_vanishing_names_the_block_it_starts_from():
    d = diagnose(_layers([1e-6, 1e-4, 5e-3, 0.5]), CTX)
    assert d.verdict == "vanishing"
    assert d.findings[0].summary.startswith("from hidden3 down to hidden1:")
    assert "1.0e-06 at hidden1" in d.findings[0].summary


def test_vanishing_read_from_the_backpropagated_gradient_too():
    # Level weight gradients, but the gradient reaching hidden1's output is 1e-3 of the logits'
    d = diagnose(_layers([1.0] * 4, out_grads=[1e-3, 1e-2, 0.1, 1.0]), CTX)
    assert d.verdict == "vanishing" and "from hidden1:" in d.findings[0].summary


def test_exploding_from_weight_ratio_backprop_growth_activation_growth_or_nan():
    assert diagnose(_layers([500.0, 2.0, 1.0, 1.0]), CTX).verdict == "exploding"
    assert diagnose(_layers([1.0] * 4, out_grads=[1e3, 10, 1, 1]), CTX).verdict == "exploding"
    assert diagnose(_layers([1.0] * 4, stds=[1, 10, 100, 1e3]), CTX).verdict == "exploding"
    assert diagnose(_layers([1.0, float("nan"), 1.0, 1.0]), CTX).verdict == "exploding"
    assert diagnose(_layers([1.0] * 4), CTX, loss=float("inf")).verdict == "exploding"


def test_dying_and_saturation_thresholds():
    assert diagnose(_layers([1.0] * 4, dead={2: 0.39}), CTX).verdict == "healthy"
    dying = diagnose(_layers([1.0] * 4, dead={2: 0.4, 3: 0.7}), CTX)
    assert dying.verdict == "dying units" and "worst hidden4: 70%" in dying.findings[0].summary
    sat = diagnose(_layers([1e-3, 1.0, 1.0, 1.0], saturated={0: 0.9}), CTX)
    assert sat.verdict == "vanishing, saturation"


def test_causes_and_notes_follow_the_spec():
    big = Context(activation="sigmoid", family="saturating", init="normal", init_std=1.0,
                  fan_in=100, depth=10)  # fmt: skip
    cause = diagnose(_layers([1.0] * 4, saturated={0: 0.9}), big).findings[0].cause
    assert cause.startswith("sigmoid with N(0, 1²) init") and "1e+02 x" in cause
    sigmoid = Context(activation="sigmoid", family="saturating", init="glorot_uniform", depth=10)
    assert "slope is at most 0.25" in diagnose(_layers([1e-5, 1, 1, 1]), sigmoid).findings[0].cause
    glorot = Context(activation="relu", family="relu", init="glorot_uniform", depth=20)
    d = diagnose(_layers([1e-5, 1, 1, 1]), glorot)
    assert "use He init" in d.findings[0].remedy
    assert [n.cause for n in d.notes] == [
        "deep ReLU net with Glorot init: the signal's variance halves at each layer"
    ]
    selu = Context(activation="selu", family="selu", init="he_normal", standardize=False)
    (note,) = diagnose(_layers([1.0] * 4), selu).notes
    assert note.summary == "SELU without LeCun init and standardized inputs"
    assert "self-normalization does not hold" in note.cause
    ok = Context(activation="selu", family="selu", init="lecun_normal", standardize=True)
    assert not diagnose(_layers([1.0] * 4), ok).notes
    for bad in ({"dropout": "dropout"}, {"penalty": True}):
        ctx = Context(activation="selu", family="selu", init="lecun_normal", standardize=True,
                      **bad)  # type: ignore[arg-type]  # fmt: skip
        (note,) = diagnose(_layers([1.0] * 4), ctx).notes
        assert note.cause == "ordinary dropout or ℓ1/ℓ2 with SELU breaks self-normalization"
    alpha = Context(activation="selu", family="selu", init="lecun_normal", standardize=True,
                    dropout="alpha")  # fmt: skip
    assert not diagnose(_layers([1.0] * 4), alpha).notes


def test_a_diverged_net_is_exploding_and_nothing_else():
    layers = _layers([1.0] * 4, dead={0: 1.0})
    layers[1].grad = float("nan")
    d = diagnose(layers, CTX)
    assert d.verdict == "exploding" and "diverged" in d.findings[0].summary


def _verdict(spec) -> tuple[str, list]:
    result = probe_spec(spec, 512)
    d = diagnose(result.layers, Context.from_spec(spec), result.loss)
    return d.verdict, d.findings


@pytest.mark.slow
@pytest.mark.parametrize(
    ("experiment", "verdict"),
    [
        ("vanishing", "vanishing"),
        ("vanishing_he", "healthy"),
        ("exploding", "exploding"),
        ("exploding_he", "healthy"),
        ("saturation", "saturation"),
        ("vanishing_bn", "healthy"),  # batch norm fixes the vanishing net
        ("exploding_clip", "exploding"),  # clipping bounds the steps, not the gradients
        ("selu_100", "healthy"),
        ("relu_100", "dying units"),
    ],
)
@pytest.mark.integration
def test_experiment_verdicts_on_fashion_mnist(experiment, verdict, fashion_root):
    spec = load_spec(REPO / "experiments" / f"{experiment}.yaml", [f"data.root={fashion_root}"])
    got, findings = _verdict(spec)
    assert got == verdict, [f.summary for f in findings]
    if verdict == "vanishing":
        assert findings[0].summary.startswith("from hidden")
    if experiment == "exploding_clip":
        assert findings[0].remedy.startswith("clipping is on (train.clip: global_norm 1)")


@pytest.mark.slow
def test_ordinary_dropout_breaks_selu_100(fashion_root):
    path = REPO / "experiments" / "selu_100.yaml"
    spec = load_spec(path, [f"data.root={fashion_root}", "model.dropout=0.2"])
    result = probe_spec(spec, 512)
    d = diagnose(result.layers, Context.from_spec(spec), result.loss)
    assert d.verdict == "exploding"  # without dropout: healthy (above)
    assert [n.cause for n in d.notes] == [
        "ordinary dropout or ℓ1/ℓ2 with SELU breaks self-normalization"
    ]
    alpha = load_spec(path, [f"data.root={fashion_root}", "model.dropout={name: alpha, rate: 0.2}"])
    assert Context.from_spec(alpha).dropout == "alpha" and not spec_notes(Context.from_spec(alpha))


@pytest.mark.slow
def test_deep_relu_with_glorot_init_vanishes_and_is_told_to_use_he(fashion_root):
    spec = validate(
        {
            "name": "relu_glorot",
            "data": {"root": str(fashion_root)},
            "model": {"hidden": [100] * 20, "activation": "relu", "init": "glorot_uniform"},
        },
        "test",
    )
    verdict, findings = _verdict(spec)
    assert verdict == "vanishing" and "use He init" in findings[0].remedy
