"""``python -m bench`` (``make bench``): every benchmark table, also written to bench/results/latest.md."""

import os
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # tables, not progress bars

from . import (
    audio,
    audio_label_efficiency,
    audio_quality,
    core,
    events,
    export,
    graph,
    online_quality,
    own_data,
    pipeline,
    pointcloud,
    real_weights,
    tabular,
    tabular_ablation,
    video,
)
from .harness import print_table, results_dir

if __name__ == "__main__":
    tables = [core.main(), pipeline.main(), audio.main(), audio_quality.main(),
              audio_label_efficiency.run(results_dir("audio-label-efficiency")), tabular.main(),
              tabular_ablation.run(results_dir("tabular-ablation")),
              print_table("GraphMAE: step time", [graph.step_speed()]), graph.main(), video.main(),
              pointcloud.main(), events.main(), real_weights.main(), own_data.main(), online_quality.main(),
              export.main()]
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.md").write_text("\n\n".join(tables) + "\n")
