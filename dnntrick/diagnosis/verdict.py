"""Verdicts from per-layer statistics: healthy, vanishing, exploding, dying units, saturation,
each with its likely cause and remedy drawn from the book's tricks. Torch-free.

The rules (thresholds are module constants):
  For each hidden block two gradient ratios are read: w = its weight gradient / the outputs
  layer's weight gradient (the `ratio` column), and b = the gradient backpropagated to its output
  / the one reaching the logits. Weight gradients can stay level while both the signal and the
  backpropagated gradient vanish or explode (a ReLU net's W-gradient is their product), so both
  are read, and so is the activations' spread.
  exploding   a statistic or the loss is not finite; or some w or b > EXPLODE_RATIO; or the
              activations' std grows more than EXPLODE_RATIO x from hidden1 to the last hidden
  vanishing   (when not exploding) some w or b < VANISH_RATIO, reported from the block nearest
              the output that crosses the line ("from hidden7 down": it and every block below
              it); or the activations' std shrinks below VANISH_RATIO x from hidden1 to the last
  dying units a ReLU-family block has at least DEAD_FRACTION of its units never positive
  saturation  a sigmoid/tanh block has at least SATURATED_FRACTION of its outputs at the limits
  healthy     none of the above
Spec-only notes (SELU without LeCun init or standardized inputs, ...) are listed whatever the
numbers say, because they break a property the numbers of one batch cannot show.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dnntrick.spec.schema import Spec

VANISH_RATIO = 1e-2
EXPLODE_RATIO = 1e2
DEAD_FRACTION = 0.4
SATURATED_FRACTION = 0.4
NOT_FINITE = "a loss, activation or gradient is not finite (inf or NaN): the net diverged"
DEEP = 5  # hidden layers from which "deep" applies to the init rules


@dataclass
class LayerStats:
    """One block's numbers (see dnntrick.diagnosis.hooks for the definitions); None = n/a."""

    layer: str
    units: int
    kind: str
    mean: float | None = None
    std: float | None = None
    dead: float | None = None
    saturated: float | None = None
    grad: float | None = None
    out_grad: float | None = None
    update: float | None = None
    ratio: float | None = None

    def compact(self) -> dict[str, float]:
        """The numbers that apply, 4 significant digits (one metrics.jsonl entry per layer)."""
        keep = ("mean", "std", "dead", "saturated", "grad", "ratio", "out_grad", "update")
        return {k: _round(v) for k in keep if (v := getattr(self, k)) is not None}

    @classmethod
    def from_compact(cls, layer: str, values: dict[str, float]) -> LayerStats:
        return cls(layer=layer, units=0, kind="", **values)


def _round(value: float) -> float:
    return float(f"{value:.4g}") if math.isfinite(value) else value


@dataclass(frozen=True)
class Context:
    """What the rules need to know about the spec (causes and remedies depend on it)."""

    activation: str = "relu"
    family: str = "relu"
    init: str = "he_normal"
    init_std: float | None = None  # std of `init: normal`
    depth: int = 2
    fan_in: int = 784  # a typical hidden block's fan-in (the middle one's)
    standardize: bool = False
    norm: str | None = None  # batch norm placement ("before"/"after" the activation) or None
    dropout: str | None = None  # "dropout" or "alpha" when some dropout rate is > 0
    penalty: bool = False  # ℓ1 or ℓ2 on the weights
    clip: str | None = None  # e.g. "global_norm 1", when gradients are clipped

    @classmethod
    def from_spec(cls, spec: Spec) -> Context:
        from dnntrick.spec.schema import default_init
        from dnntrick.tricks.activations import ACTIVATIONS

        model = spec.model
        init = default_init(model)
        return cls(
            activation=model.activation.name,
            family=ACTIVATIONS[model.activation.name].family,
            init=init,
            init_std=(model.init.std or 1.0) if init == "normal" else None,
            depth=len(model.hidden),
            fan_in=([784, *model.hidden][len(model.hidden) // 2]),
            standardize=spec.data.standardize,
            norm=model.norm.placement if model.norm else None,
            dropout=model.dropout.name
            if model.dropout and max(model.dropout.rate, model.dropout.inputs) > 0
            else None,
            penalty=spec.train.l1 > 0 or spec.train.l2 > 0,
            clip=f"{spec.train.clip.by} {spec.train.clip.threshold:g}" if spec.train.clip else None,
        )

    @property
    def init_text(self) -> str:
        return f"N(0, {self.init_std:g}²)" if self.init == "normal" else self.init


@dataclass(frozen=True)
class Finding:
    kind: str  # vanishing | exploding | dying units | saturation
    summary: str
    cause: str
    remedy: str


@dataclass
class Diagnosis:
    verdict: str  # "healthy" or the findings' kinds joined by ", "
    findings: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _hidden(layers: list[LayerStats]) -> list[LayerStats]:
    return layers[:-1]


def _finite(layers: list[LayerStats]) -> bool:
    values = [v for s in layers for v in s.compact().values()]
    return all(math.isfinite(v) for v in values)


def diagnose(layers: list[LayerStats], ctx: Context, loss: float | None = None) -> Diagnosis:
    """Apply the rules to one measurement's layers (depth order, outputs last)."""
    findings: list[Finding] = []
    hidden = _hidden(layers)
    if (explode := _exploding(layers, loss)) is not None:
        findings.append(Finding("exploding", explode, *_explode_cause(ctx)))
        if explode == NOT_FINITE:  # dead/saturated counts of NaNs mean nothing
            return Diagnosis("exploding", findings, spec_notes(ctx))
    elif (vanish := _vanishing(layers)) is not None:
        findings.append(Finding("vanishing", vanish, *_vanish_cause(ctx)))
    dead = [s for s in hidden if s.dead is not None and s.dead >= DEAD_FRACTION]
    if dead:
        worst = max(dead, key=lambda s: s.dead or 0.0)
        summary = (
            f"{len(dead)} block(s) with ≥ {DEAD_FRACTION:.0%} of units never positive "
            f"(worst {worst.layer}: {worst.dead:.0%})"
        )
        findings.append(Finding("dying units", summary, *_dying_cause(ctx)))
    saturated = [s for s in hidden if s.saturated is not None and s.saturated >= SATURATED_FRACTION]
    if saturated:
        worst = max(saturated, key=lambda s: s.saturated or 0.0)
        summary = (
            f"{len(saturated)} block(s) with ≥ {SATURATED_FRACTION:.0%} of outputs at the "
            f"limits (worst {worst.layer}: {worst.saturated:.0%})"
        )
        findings.append(Finding("saturation", summary, *_saturation_cause(ctx)))
    verdict = ", ".join(f.kind for f in findings) or "healthy"
    return Diagnosis(verdict, findings, spec_notes(ctx))


def backprop_ratios(layers: list[LayerStats]) -> list[float | None]:
    """b for every block: its out_grad / the outputs layer's out_grad (None when unknown)."""
    last = layers[-1].out_grad
    return [s.out_grad / last if s.out_grad is not None and last else None for s in layers]


def _spread(hidden: list[LayerStats]) -> float | None:
    """Last hidden block's activation std / hidden1's."""
    if len(hidden) >= 2 and hidden[0].std and hidden[-1].std is not None:
        return hidden[-1].std / hidden[0].std
    return None


def _exploding(layers: list[LayerStats], loss: float | None) -> str | None:
    if not _finite(layers) or (loss is not None and not math.isfinite(loss)):
        return NOT_FINITE
    hidden = _hidden(layers)
    w = max(hidden, key=lambda s: s.ratio or 0.0, default=None)
    if w is not None and w.ratio is not None and w.ratio > EXPLODE_RATIO:
        return f"{w.layer}'s weight gradient is {w.ratio:.1e} x the outputs layer's"
    b = [
        (r, s.layer) for r, s in zip(backprop_ratios(layers), hidden, strict=False) if r is not None
    ]
    if b and (top := max(b))[0] > EXPLODE_RATIO:
        return f"the gradient grows {top[0]:.1e} x from the logits back to {top[1]}'s output"
    if (spread := _spread(hidden)) is not None and spread > EXPLODE_RATIO:
        return f"activation std grows {spread:.1e} x from {hidden[0].layer} to {hidden[-1].layer}"
    return None


def _vanishing(layers: list[LayerStats]) -> str | None:
    hidden = _hidden(layers)
    low = [
        (min(x for x in (s.ratio, b) if x is not None), s.layer)
        for s, b in zip(hidden, backprop_ratios(layers), strict=False)
        if any(x is not None and x < VANISH_RATIO for x in (s.ratio, b))
    ]
    if low:
        names = [s.layer for s in hidden]
        first = low[-1][1]
        below = names[: names.index(first) + 1]
        span = first if len(below) == 1 else f"{first} down to {below[0]}"
        smallest = min(low)
        return (
            f"from {span}: gradients < {VANISH_RATIO:g} x the output side's "
            f"(smallest {smallest[0]:.1e} at {smallest[1]})"
        )
    if (spread := _spread(hidden)) is not None and spread < VANISH_RATIO:
        return (
            f"activation std shrinks to {spread:.1e} x from {hidden[0].layer} to {hidden[-1].layer}"
        )
    return None


HE_REMEDY = "use He init (init: he_normal) with ReLU-family activations"


# Var(W)·fan_in that keeps the signal's variance, by family (He 2, LeCun and ~Glorot 1)
TARGET_GAIN = {"relu": 2.0, "selu": 1.0, "saturating": 1.0, "smooth": 1.0}
AUTO_REMEDY = (
    "use the init that suits the activation (init: auto): He for the ReLU family, LeCun for "
    "SELU, Glorot for tanh; for a deep net prefer ReLU-family activations to sigmoid"
)


def _init_mismatch(ctx: Context) -> tuple[str, str] | None:
    """The cause and remedy when the init does not suit the activation, else None."""
    if ctx.init == "normal" and ctx.init_std is not None:
        gain = ctx.init_std**2 * ctx.fan_in / TARGET_GAIN[ctx.family]
        if gain > 2 or gain < 0.5:
            size = "large" if gain > 1 else "small"
            return (
                f"{ctx.activation} with {ctx.init_text} init: with fan-in {ctx.fan_in} that is "
                f"{gain:.2g} x the variance that keeps the signal's size, so each layer "
                f"{'amplifies' if gain > 1 else 'shrinks'} it (weights too {size}; the book's §1)",
                AUTO_REMEDY,
            )
    if ctx.family == "relu" and ctx.init.startswith(("glorot", "lecun")):
        return (
            f"deep ReLU-family net with {ctx.init} init: each layer halves the signal's variance",
            HE_REMEDY,
        )
    if ctx.family == "selu" and not ctx.init.startswith("lecun"):
        return (
            f"SELU with {ctx.init} init: self-normalization needs LeCun init",
            "use init: lecun_normal (and data.standardize: true)",
        )
    return None


def _vanish_cause(ctx: Context) -> tuple[str, str]:
    if (mismatch := _init_mismatch(ctx)) is not None:
        return mismatch
    if ctx.family == "saturating":
        return (
            f"{ctx.activation}'s slope is at most {0.25 if ctx.activation == 'sigmoid' else 1:g} "
            "and near 0 at its limits: the gradient shrinks at every layer, whatever the init",
            "use ReLU-family activations with He init, or SELU with LeCun init (the book's §2)",
        )
    return (
        f"{ctx.depth} layers of {ctx.activation}: small per-layer losses compound with depth",
        "use batch norm, SELU with LeCun init and standardized inputs, or fewer layers",
    )


def _explode_cause(ctx: Context) -> tuple[str, str]:
    cause, remedy = _explode_reason(ctx)
    if ctx.clip:
        remedy = (
            f"clipping is on (train.clip: {ctx.clip}): it bounds each step, so training need "
            f"not diverge, but the gradients it clips still explode; to fix the cause: {remedy}"
        )
    return cause, remedy


def _explode_reason(ctx: Context) -> tuple[str, str]:
    if (mismatch := _init_mismatch(ctx)) is not None:
        return mismatch
    return (
        f"{ctx.depth} layers of {ctx.activation} with {ctx.init_text} init: each layer "
        "amplifies the signal a little, and that compounds with depth",
        "use a variance-preserving init, batch norm, a smaller learning rate, or gradient "
        "clipping (the book's §1, §3, §4)",
    )


def _dying_cause(ctx: Context) -> tuple[str, str]:
    if ctx.activation == "relu" and ctx.depth >= DEEP:
        return (
            f"{ctx.depth} ReLU layers: with depth the inputs' representations become alike, so a "
            "unit that is off for one input is off for all (the relu_100 net)",
            "use SELU with LeCun init and standardized inputs, batch norm, or leaky ReLU/ELU "
            "(the book's §2)",
        )
    return (
        f"{ctx.activation} units pushed to the side where they output ≤ 0 for every input: "
        "a plain ReLU then gets no gradient at all (the book's §2a)",
        "use leaky ReLU, ELU or SELU; He init; a smaller learning rate",
    )


def _saturation_cause(ctx: Context) -> tuple[str, str]:
    if (mismatch := _init_mismatch(ctx)) is not None:
        return mismatch
    return (
        f"{ctx.activation}'s pre-activations are large, where its slope is ~0",
        "standardize the inputs (data.standardize: true), use Glorot init or batch norm, "
        "or ReLU-family activations",
    )


def spec_notes(ctx: Context) -> list[Finding]:
    """Spec pairings the book warns about, true whatever one batch shows."""
    notes = []
    if ctx.family == "selu" and (not ctx.init.startswith("lecun") or not ctx.standardize):
        missing = " and ".join(
            text
            for text, bad in (
                ("LeCun init", not ctx.init.startswith("lecun")),
                ("standardized inputs", not ctx.standardize),
            )
            if bad
        )
        notes.append(
            Finding(
                "note",
                f"SELU without {missing}",
                "SELU without LeCun init or without standardized inputs: self-normalization "
                "does not hold",
                "use init: lecun_normal and data.standardize: true (the book's §2c)",
            )
        )
    if ctx.family == "selu" and (ctx.dropout == "dropout" or ctx.penalty):
        used = " and ".join(
            text
            for text, on in (("dropout", ctx.dropout == "dropout"), ("ℓ1/ℓ2", ctx.penalty))
            if on
        )
        notes.append(
            Finding(
                "note",
                f"SELU with ordinary {used}",
                "ordinary dropout or ℓ1/ℓ2 with SELU breaks self-normalization",
                "use alpha dropout (model.dropout: {name: alpha}) and max-norm rather than "
                "ℓ1/ℓ2 (the book's §9)",
            )
        )
    if ctx.family == "relu" and ctx.depth >= DEEP and ctx.init.startswith("glorot"):
        notes.append(
            Finding(
                "note",
                f"{ctx.depth}-layer {ctx.activation} net with {ctx.init} init",
                "deep ReLU net with Glorot init: the signal's variance halves at each layer",
                "use He init (init: he_normal)",
            )
        )
    return notes
