"""Augmentation: seeded, changes the images in the way each option says, refuses digit flips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dnntrick.errors import SpecError
from dnntrick.runner import run_spec
from dnntrick.spec.config import load_spec
from dnntrick.spec.schema import AugmentSpec
from dnntrick.tricks.augment import Augmenter, build_augmenter
from tests.conftest import tiny_overrides, write_spec

SIDE = 12


def images(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Random images [n, SIDE²] in [0, 1] with a black 2-pixel border (shifts lose nothing)."""
    x = torch.zeros(n, SIDE, SIDE)
    x[:, 2:-2, 2:-2] = torch.rand(
        n, SIDE - 4, SIDE - 4, generator=torch.Generator().manual_seed(seed)
    )
    return x.reshape(n, -1)


def augment(x: torch.Tensor, seed: int = 1, **options) -> torch.Tensor:
    return Augmenter(AugmentSpec(**options), SIDE, seed)(x)


def test_deterministic_for_a_seed_and_different_across_seeds():
    x = images()
    options = {"shift": 2, "rotate": 15, "flip": True, "erase": 0.5}
    a, b, c = augment(x, 1, **options), augment(x, 1, **options), augment(x, 2, **options)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    stream = Augmenter(AugmentSpec(**options), SIDE, 1)
    assert not torch.equal(stream(x), stream(x))  # each batch gets new draws


def shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    return torch.roll(img, shifts=(dy, dx), dims=(0, 1))  # the border is black: roll = shift


def test_shift_moves_each_image_by_whole_pixels_within_range():
    x = images()
    out = augment(x, shift=2).reshape(-1, SIDE, SIDE)
    moved = 0
    for img, new in zip(x.reshape(-1, SIDE, SIDE), out, strict=True):
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.allclose(new, shifted(img, dy, dx), atol=1e-5)
        ]
        assert len(matches) == 1, "every output is its input shifted by at most 2 pixels"
        moved += matches[0] != (0, 0)
    assert moved > 0.8 * len(x)  # 24 of 25 shifts move the image


def test_flip_mirrors_about_half_the_images():
    x = images(200)
    out = augment(x, flip=True).reshape(-1, SIDE, SIDE)
    mirror = x.reshape(-1, SIDE, SIDE).flip(-1)
    flipped = torch.isclose(out, mirror, atol=1e-5).flatten(1).all(1)
    kept = torch.isclose(out, x.reshape(-1, SIDE, SIDE), atol=1e-5).flatten(1).all(1)
    assert bool((flipped | kept).all())
    assert 60 < int(flipped.sum()) < 140


def test_rotation_turns_a_bar_but_keeps_a_disk():
    yy, xx = torch.meshgrid(torch.arange(SIDE) - 5.5, torch.arange(SIDE) - 5.5, indexing="ij")
    disk = ((yy**2 + xx**2) <= 9).float().reshape(1, -1).repeat(32, 1)
    bar = (yy.abs() < 1).float().reshape(1, -1).repeat(32, 1)
    turned = augment(bar, rotate=30)
    assert ((turned - bar).abs().amax(dim=1) > 0.2).float().mean() > 0.8  # most turned visibly
    disk_change = (augment(disk, rotate=30) - disk).abs().mean()
    assert disk_change < (turned - bar).abs().mean() / 3  # a disk hardly changes (edges only)
    assert float(turned.sum(1).mean()) == pytest.approx(float(bar.sum(1).mean()), rel=0.1)


def test_erase_blacks_out_one_rectangle():
    x = torch.ones(100, SIDE * SIDE)
    out = augment(x, erase=1.0).reshape(-1, SIDE, SIDE)
    for img in out:
        rows, cols = torch.nonzero(img == 0, as_tuple=True)
        assert len(rows) > 0
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert len(rows) == h * w  # a full rectangle
        assert 1 <= len(rows) <= 0.5 * SIDE * SIDE
    half = augment(x, erase=0.5)
    assert 25 < int((half == 0).any(1).sum()) < 75


@pytest.mark.integration
def test_standardized_inputs_are_augmented_as_raw_pixels():
    x = images()
    mean = x.mean(0, keepdim=True)
    std = x.std(0, keepdim=True) + 1e-10
    spec = AugmentSpec(shift=2)
    raw = Augmenter(spec, SIDE, 5)(x)
    standardized = Augmenter(spec, SIDE, 5, mean=mean, std=std)((x - mean) / std)
    torch.testing.assert_close(standardized * std + mean, raw, atol=1e-4, rtol=1e-4)


def test_flips_are_refused_for_digits(tmp_path: Path):
    path = write_spec(tmp_path, "data: {dataset: mnist, augment: {flip: true}}\n")
    with pytest.raises(SpecError, match=r"data: augment.flip is refused for mnist"):
        load_spec(path)
    with pytest.raises(SpecError, match="refused for kmnist"):
        load_spec(path, ["data.dataset=kmnist"])
    assert load_spec(path, ["data.dataset=fashion-mnist"]).data.augment == AugmentSpec(flip=True)
    with pytest.raises(SpecError, match="augmentation does nothing"):
        load_spec(path, ["data.augment={}"])


@pytest.mark.integration
def test_augmentation_changes_training(tmp_path: Path, tiny_root: Path):
    text = "name: aug\nmodel: {hidden: [16]}\ntrain: {batch_size: 100}\n"
    spec = write_spec(tmp_path, text)
    plain = run_spec(load_spec(spec, tiny_overrides(tiny_root)), out=tmp_path)
    shifted_run = run_spec(
        load_spec(spec, [*tiny_overrides(tiny_root), "data.augment={shift: 3}"]), out=tmp_path
    )
    assert plain.history[0]["train_loss"] != shifted_run.history[0]["train_loss"]
    # evaluation never augments: the validation split is what it was
    assert build_augmenter(None, 784, 0, "cpu") is None
