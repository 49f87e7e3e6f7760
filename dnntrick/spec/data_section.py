"""The `data:` section: which data set, how it is split, standardized and augmented."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from dnntrick.data.catalog import DATASETS
from dnntrick.spec.base import StrictModel

OWN_DATASETS = ("arrays", "csv")  # the user's files: dnntrick/data/own.py
OWN_FIELDS = {  # DataSpec field: (the datasets it applies to, their name in the error)
    "root": (tuple(DATASETS), "the built-in sets"),
    "path": (OWN_DATASETS, "own data (arrays, csv)"),
    "test_size": (OWN_DATASETS, "own data (arrays, csv)"),
    "n_classes": (OWN_DATASETS, "own data (arrays, csv)"),
    "test_path": (("csv",), "csv"),
    "label": (("csv",), "csv"),
}


class AugmentSpec(StrictModel):
    """Random changes to each training image, drawn per batch on the device (seeded)."""

    shift: NonNegativeInt = Field(0, description="largest shift, in whole pixels, along each axis")
    rotate: float = Field(0.0, ge=0, le=180, description="largest rotation, degrees, either way")
    flip: bool = Field(False, description="mirror left-right with probability 1/2 (not for digits)")
    erase: float = Field(
        0.0,
        ge=0,
        le=1,
        description="probability of blacking out one rectangle of 2-33% of the image",
    )

    @model_validator(mode="after")
    def _does_something(self) -> AugmentSpec:
        if not (self.shift or self.rotate or self.flip or self.erase):
            raise ValueError("augmentation does nothing: set shift, rotate, flip or erase")
        return self


class DataSpec(StrictModel):
    dataset: Literal["mnist", "fashion-mnist", "kmnist", "arrays", "csv"] = Field(
        "fashion-mnist",
        description="a built-in set (IDX files, 28x28 grey, 10 classes), or your own: arrays "
        "(.npz or a folder of .npy), csv",
    )
    root: str | None = Field(
        None, description="the folder holding the IDX files (only it is looked in); null = search"
    )
    path: str | None = Field(
        None,
        description="own data: an .npz (x_train, y_train[, x_test, y_test]), a folder of those "
        "names as .npy files, or a .csv file; relative to the working directory",
    )
    test_path: str | None = Field(None, description="csv: a second .csv file, the test set")
    label: str | None = Field(None, description="csv: the name of the label column")
    test_size: PositiveInt | None = Field(
        None,
        description="own data without a test set: the last N training rows become the test set",
    )
    n_classes: PositiveInt | None = Field(
        None, description="own data: number of classes K (labels 0..K-1); null = largest label + 1"
    )
    val_size: NonNegativeInt = Field(5000, description="images held out from the training set")
    val_from: Literal["first", "last"] = Field(
        "last", description="where the validation images come from: 1st/2nd ed. first, 3rd ed. last"
    )
    standardize: bool = Field(
        False,
        description="per-feature (x - mean) / std with the training split's statistics; std 1 "
        "for a feature constant there (as scikit-learn's StandardScaler)",
    )
    train_limit: PositiveInt | None = Field(None, description="keep the first N training images")
    classes: list[NonNegativeInt] | None = Field(
        None, description="keep only these labels, renumbered 0..k-1 in the given order"
    )
    augment: AugmentSpec | None = Field(None, description="training-time augmentation; null = none")

    @model_validator(mode="after")
    def _own_data_fields(self) -> DataSpec:
        own = self.dataset in OWN_DATASETS
        if own and self.path is None:
            raise ValueError(f"dataset {self.dataset} needs path: the file to read")
        if self.dataset == "csv" and self.label is None:
            raise ValueError("dataset csv needs label: the name of the label column")
        for key, (datasets, who) in OWN_FIELDS.items():
            if getattr(self, key) is not None and self.dataset not in datasets:
                raise ValueError(f"{key} applies to {who} only (dataset is {self.dataset})")
        if self.test_path is not None and self.test_size is not None:
            raise ValueError("test_size and test_path both give a test set; drop one")
        return self

    @model_validator(mode="after")
    def _flips_fit_the_data(self) -> DataSpec:
        info = DATASETS.get(self.dataset)  # own data: flips are the user's call
        if self.augment and self.augment.flip and info and not info.flips_meaningful:
            raise ValueError(
                f"augment.flip is refused for {self.dataset}: a mirrored character is another "
                "character or none; use shift and rotate"
            )
        return self

    @field_validator("classes")
    @classmethod
    def _classes(cls, value: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if value is not None:
            if len(value) < 2:
                raise ValueError("needs at least 2 classes")
            if len(set(value)) != len(value):
                raise ValueError("lists a class twice")
            if max(value) > 9 and info.data.get("dataset") in DATASETS:  # own data: at load
                raise ValueError("labels run from 0 to 9")
        return value
