"""The built-in data sets: names, class names, whether a mirror image keeps its label.

Pure Python: the spec validates dataset names against this without importing numpy or torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    torchvision_class: str
    classes: tuple[str, ...]
    flips_meaningful: bool  # horizontal flips keep the label (clothes yes, digits no)


DIGITS = tuple(str(i) for i in range(10))
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("MNIST", DIGITS, False),
    "fashion-mnist": DatasetInfo(
        "FashionMNIST",
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        True,
    ),
    "kmnist": DatasetInfo(
        "KMNIST", ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"), False
    ),
}
