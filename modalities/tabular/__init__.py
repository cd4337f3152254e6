"""Tabular modality: T-JEPA (Thimonier et al. 2025) with a schema-aware processor saved with the model."""

from pathlib import Path

from zoo import Architecture, Modality

from .baselines import raw_features
from .data import load_data
from .model import TJepaConfig, TJepaEncoder, TJepaPretrainer, TJepaPretrainingConfig
from .processor import Rows, TabularProcessor, TabularProcessorConfig
from .sample import sample_data

__all__ = ["MODALITY", "Rows", "TJepaConfig", "TJepaEncoder", "TJepaPretrainer", "TJepaPretrainingConfig",
           "TabularProcessor", "TabularProcessorConfig", "load_data"]

MODALITY = Modality(
    name="tabular",
    description="T-JEPA: feature tokens, feature-subset context/targets, EMA target encoder, latent prediction",
    processor=TabularProcessor,
    architectures={"t-jepa": Architecture("t-jepa", TJepaConfig, TJepaEncoder, TJepaPretrainer,
                                          TJepaPretrainingConfig)},
    load_data=load_data,
    table_source="table",
    baselines={"raw features (standardised + one-hot)": raw_features},
    recipes=Path(__file__).parent / "recipes",
    sample_data=sample_data,
    task="tabular-classification",
    usage_example=("# one row: column → value (here a typical value for every column the model knows)\n"
                   "example = {**{c: 0.0 for c in processor.numerical},\n"
                   "           **{c: d.reference for c, d in processor.dates.items()},\n"
                   "           **{c: (processor.vocab[c] or [None])[0] for c in processor.categorical}}"),
)
