"""The sizes of the model's non-image inputs, fixed by the training cohort's covariates.

Defined with the data that decides it (:class:`~progression.data.datamodule.ProgressionDataModule`
fills it in) and read by the models that are built to it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class InputLayout:
    """Sizes of the non-image inputs; fixed by the training cohort's covariates.

    ``*_cat_sizes`` are the number of embedding rows per categorical covariate (levels
    + 2 reserved rows: 0 = missing, 1 = a level not seen in training).
    """

    n_static_num: int = 0
    static_cat_sizes: list[int] = field(default_factory=list)
    n_visit_num: int = 0
    visit_cat_sizes: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)
