"""Event-sequence modality: CoLES (Babaev et al. 2022) on entity histories — a GRU (or the core Transformer)
over embedded events, random subsequences as positive pairs, margin contrastive loss with hard negatives."""

from pathlib import Path

from zoo import Architecture, Modality, Protocol

from .baselines import aggregate_features
from .data import EventStream, Histories, group_events, load_data, make_cardholders
from .evaluate import boosting
from .model import CoLESConfig, CoLESEncoder, CoLESPretrainer, CoLESPretrainingConfig
from .processor import EventProcessor, EventProcessorConfig
from .sample import sample_data

__all__ = ["MODALITY", "CoLESConfig", "CoLESEncoder", "CoLESPretrainer", "CoLESPretrainingConfig", "EventProcessor",
           "EventProcessorConfig", "EventStream", "Histories", "group_events", "load_data", "make_cardholders"]

MODALITY = Modality(
    name="events",
    description="CoLES: event embeddings → GRU, random subsequences as positives, margin loss with hard negatives",
    processor=EventProcessor,
    architectures={"coles": Architecture("coles", CoLESConfig, CoLESEncoder, CoLESPretrainer,
                                         CoLESPretrainingConfig)},
    load_data=load_data,
    table_source="table",
    recipes=Path(__file__).parent / "recipes",
    sample_data=sample_data,
    usage_example=("# one entity's history: a time column and the event fields the model knows (a dict of columns\n"
                   "# or a pandas DataFrame); here three events with typical values\n"
                   "cfg = processor.config\n"
                   "example = {cfg.time_column: [0.0, 3600.0, 7200.0],\n"
                   "           **{c: [0.0] * 3 for c in processor.schema.numerical},\n"
                   "           **{c: [d.reference] * 3 for c, d in processor.schema.dates.items()},\n"
                   "           **{c: [(processor.schema.vocab[c] or [None])[0]] * 3\n"
                   "              for c in processor.schema.categorical}}"),
    baselines={"aggregates (counts, sums, means per category value)": aggregate_features},
    evaluators={"boosting": Protocol(lambda encoder, processor, spec: boosting(encoder, processor, spec,
                                                                               **spec.get("boosting", {})),
                                     task="sequence-classification", metric="accuracy",
                                     examples=lambda spec: (load_data(spec["train"]), load_data(spec["test"])))},
    task="sequence-classification",
)
