"""Data augmentation on the device, one batch at a time, from its own seeded generator.

Shifts, rotations and flips are one affine map per image, applied to the whole batch by
`affine_grid` + `grid_sample` (no per-image Python loop); random erasing is a rectangle mask
built by broadcasting. Pixels that come from outside the image, and erased pixels, are black
(raw value 0). Standardized inputs are mapped back to raw pixels first and standardized again
after, so the fill and the interpolation are those of the raw image.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from dnntrick.spec.schema import AugmentSpec

ERASE_AREA = (0.02, 0.33)  # fraction of the image erased (torchvision RandomErasing's defaults)
ERASE_RATIO = (0.3, 3.3)  # height / width of the erased rectangle


class Augmenter:
    """Callable: a training batch x [B, H·W] → an augmented batch of the same shape."""

    def __init__(
        self,
        spec: AugmentSpec,
        side: int,
        seed: int,
        device: torch.device | str = "cpu",
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
    ):
        self.spec, self.side = spec, side
        self.mean, self.std = mean, std  # [1, H·W] per-pixel statistics when standardized
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, side, spec = len(x), self.side, self.spec
        if self.mean is not None and self.std is not None:
            x = x * self.std + self.mean
        img = x.reshape(b, 1, side, side)
        u = torch.rand(b, 9, generator=self.generator, device=x.device)  # all of this batch's draws
        if spec.shift or spec.rotate or spec.flip:
            img = self._affine(img, u[:, :4])
        if spec.erase:
            img = self._erase(img, u[:, 4:])
        x = img.reshape(b, side * side)
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        return x

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The generator's state: a resumed run draws the same augmentations."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])

    def _affine(self, img: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Rotate by up to ±rotate degrees, mirror with probability 1/2, shift by whole pixels."""
        spec, side = self.spec, self.side
        angle = (2 * u[:, 0] - 1) * math.radians(spec.rotate)
        mirror = torch.where(u[:, 1] < 0.5, -1.0, 1.0) if spec.flip else torch.ones_like(angle)
        # integer shifts in [-shift, shift]; one pixel is 2/side in grid_sample's [-1, 1] units
        shift = (torch.floor(u[:, 2:4] * (2 * spec.shift + 1)) - spec.shift).clamp(
            -spec.shift, spec.shift
        )
        cos, sin = torch.cos(angle), torch.sin(angle)
        # theta maps output coordinates to input coordinates: input = R · M · out - t
        theta = torch.stack(
            [
                torch.stack([cos * mirror, -sin, -shift[:, 0] * 2 / side], dim=1),
                torch.stack([sin * mirror, cos, -shift[:, 1] * 2 / side], dim=1),
            ],
            dim=1,
        )  # [B, 2, 3]
        grid = F.affine_grid(theta, list(img.shape), align_corners=False)
        return F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _erase(self, img: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """With probability `erase`, black out one random rectangle per image."""
        side = self.side
        lo, hi = ERASE_AREA
        area = (lo + (hi - lo) * u[:, 0]) * side * side
        log_ratio = math.log(ERASE_RATIO[0]) + math.log(ERASE_RATIO[1] / ERASE_RATIO[0]) * u[:, 1]
        h = torch.sqrt(area * torch.exp(log_ratio)).round().clamp(1, side)
        w = torch.sqrt(area / torch.exp(log_ratio)).round().clamp(1, side)
        top = torch.floor(u[:, 2] * (side - h + 1))
        left = torch.floor(u[:, 3] * (side - w + 1))
        apply = u[:, 4] < self.spec.erase
        rows = torch.arange(side, device=img.device).view(1, side, 1)
        cols = torch.arange(side, device=img.device).view(1, 1, side)
        inside = (
            (rows >= top.view(-1, 1, 1))
            & (rows < (top + h).view(-1, 1, 1))
            & (cols >= left.view(-1, 1, 1))
            & (cols < (left + w).view(-1, 1, 1))
            & apply.view(-1, 1, 1)
        )  # [B, H, W]
        return img.masked_fill(inside.unsqueeze(1), 0.0)


def build_augmenter(
    spec: AugmentSpec | None,
    in_features: int,
    seed: int,
    device: torch.device | str,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
) -> Augmenter | None:
    """The augmenter of a spec (None when augmentation is off) for square images of in_features."""
    if spec is None:
        return None
    from dnntrick.errors import UsageError

    side = math.isqrt(in_features)
    if side * side != in_features:
        raise UsageError(
            f"data.augment: needs square images (got {in_features} features); "
            "set data.augment: null"
        )
    if spec.shift >= side:
        raise UsageError(
            f"data.augment.shift: {spec.shift} pixels moves a {side}×{side} image entirely out "
            f"of view; use at most {side - 1} (a few pixels, e.g. 2)"
        )
    # its own stream: a seed offset keeps it apart from the data-order generator
    return Augmenter(spec, side, seed + 1_000_003, device, mean, std)
