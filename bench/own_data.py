"""Own data (issue #32, "Must show"): for every installed modality (``zoo.installed()``), on its sample set and on
two generated sets of other shapes a user might bring, the README's own-data path — ``zoo pretrain RECIPE --data D
--set train.steps=40 --set train.warmup_steps=4 [the README's extras]`` then ``zoo finetune MODEL --data D [the
README's --lr]`` — beside the same fine-tuning from random init (``finetune(..., from_scratch=True)``, same
settings) and the hand-made baseline the fine-tuning result reports (``result["baseline"]``). Test accuracy on
the run's own held-out split. ``python -m bench.own_data [OUT]``; a finished cell is kept in ``cells.jsonl`` (a
killed run picks up where it stopped), the table in ``bench/results/own-data.json`` and ``own-data.md``."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .harness import machine, publish_table, results_dir

STEPS = ["--set", "train.steps=40", "--set", "train.warmup_steps=4"]

# the README's per-modality extras ("Pretrain on your own data", "Fine-tune on your own data")
README_PRETRAIN: dict[str, list[str]] = {"video": ["--set", "train.batch_size=8"],
                                         "pointcloud": ["--set", "train.batch_size=8"]}
README_FINETUNE: dict[str, list[str]] = {"audio": ["--lr", "2e-3"], "video": ["--lr", "2e-3"],
                                         "pointcloud": ["--lr", "2e-3"], "graph": ["--lr", "1e-2"],
                                         "tabular": ["--lr", "3e-3"], "events": []}


@dataclass
class Cell:
    """One data set of one modality and how the README's commands are run on it."""

    modality: str
    name: str                                  # what the table calls the set
    data: Path
    recipe: str
    examples: int
    classes: int
    label_column: str | None = None
    pretrain_args: list[str] = field(default_factory=list)   # beyond --data, --label-column and the 40 steps
    finetune_args: list[str] = field(default_factory=list)   # beyond --data and --label-column


# --- generated sets, one function per modality ------------------------------------------------------------------
def _tone(rng: np.random.Generator, sr: int, seconds: float, lo: float, hi: float) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    f = rng.uniform(lo, hi)
    wave = sum(a * np.sin(2 * np.pi * f * k * t + rng.uniform(0, 2 * np.pi)) for k, a in ((1, 1.0), (2, 0.4)))
    return rng.uniform(0.2, 0.6) * wave / 1.4


def audio_sets(root: Path) -> list[Cell]:
    """8 kHz stereo tones of 4 bands (the channels differ in loudness); 44.1 kHz clips of 1.5 s whose first 1 s
    is noise and whose band (3 classes) is decided by a tone in the last 0.5 s."""
    import soundfile as sf
    rng = np.random.default_rng(1)
    bands4 = {"b150": (150, 250), "b400": (400, 600), "b900": (900, 1300), "b2k": (2000, 3000)}
    a = root / "tones-8k-stereo"
    for band, (lo, hi) in bands4.items():
        (a / band).mkdir(parents=True, exist_ok=True)
        for i in range(10):
            mono = _tone(rng, 8000, rng.uniform(0.6, 1.2), lo, hi)
            stereo = np.stack([mono, rng.uniform(0.3, 1.0) * mono], 1) + rng.normal(0, 0.02, (len(mono), 2))
            sf.write(a / band / f"{band}_{i}.wav", stereo.astype(np.float32), 8000)
    bands3 = {"low": (180, 260), "mid": (600, 800), "high": (1800, 2400)}
    b = root / "late-44k-1.5s"
    for band, (lo, hi) in bands3.items():
        (b / band).mkdir(parents=True, exist_ok=True)
        for i in range(10):
            sr = 44100
            noise = rng.normal(0, 0.1, sr)
            tone = _tone(rng, sr, 0.5, lo, hi) + rng.normal(0, 0.02, sr // 2)
            sf.write(b / band / f"{band}_{i}.wav", np.concatenate([noise, tone]).astype(np.float32), sr)
    ft = README_FINETUNE["audio"]
    return [Cell("audio", "8 kHz stereo, 0.6–1.2 s, 4 bands", a, "audio-wav2vec2-tiny", 40, 4, finetune_args=ft),
            Cell("audio", "44.1 kHz mono, 1.5 s, band in the last 0.5 s", b, "audio-wav2vec2-tiny", 30, 3,
                 finetune_args=ft)]


def video_sets(root: Path) -> list[Cell]:
    """64×48 at 24 fps, 2 s, squares of 4 colours; 96×96 at 30 fps, 1 s, a white square moving in one of 4
    directions (the class is the motion, not the colour)."""
    from modalities.video.data import write_mp4
    rng = np.random.default_rng(2)
    colours = {"red": (220, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 220), "yellow": (220, 220, 40)}
    a = root / "clips-64x48-24fps"
    for colour, rgb in colours.items():
        (a / colour).mkdir(parents=True, exist_ok=True)
        for i in range(8):
            clip = np.full((48, 48, 64, 3), 110, dtype=np.uint8)
            side = int(rng.integers(8, 16))
            y, x = int(rng.integers(0, 48 - side)), int(rng.integers(0, 64 - side))
            dy, dx = rng.choice([-1, 0, 1], 2)
            for t in range(48):
                yy, xx = int(np.clip(y + dy * t // 2, 0, 48 - side)), int(np.clip(x + dx * t // 2, 0, 64 - side))
                clip[t, yy:yy + side, xx:xx + side] = rgb
            write_mp4(clip, a / colour / f"{colour}_{i}.mp4", fps=24)
    moves = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
    b = root / "motion-96px-30fps"
    for move, (dy, dx) in moves.items():
        (b / move).mkdir(parents=True, exist_ok=True)
        for i in range(8):
            clip = rng.integers(90, 130, (30, 96, 96, 3)).astype(np.uint8)
            side = 16
            y, x = 40 + int(rng.integers(-8, 9)), 40 + int(rng.integers(-8, 9))
            for t in range(30):
                yy, xx = int(np.clip(y + dy * t * 2, 0, 96 - side)), int(np.clip(x + dx * t * 2, 0, 96 - side))
                clip[t, yy:yy + side, xx:xx + side] = 240
            write_mp4(clip, b / move / f"{move}_{i}.mp4", fps=30)
    pre, ft = README_PRETRAIN["video"], README_FINETUNE["video"]
    return [Cell("video", "64×48, 24 fps, 2 s, 4 colours", a, "video-videomae-tiny", 32, 4, None, pre, ft),
            Cell("video", "96×96, 30 fps, 1 s, 4 motion directions", b, "video-videomae-tiny", 32, 4, None, pre,
                 ft)]


def pointcloud_sets(root: Path) -> list[Cell]:
    """256 points with normals and colours in .ply, 4 shapes (a cylinder added); 4,096 points with noise of 5%
    of the size and 5% outliers, in .xyz."""
    import open3d as o3d

    from modalities.pointcloud.sample import _cloud
    rng = np.random.default_rng(3)

    def cylinder(n: int) -> np.ndarray:
        a, z = rng.uniform(0, 2 * np.pi, n), rng.uniform(-1, 1, n)
        p = np.stack([np.cos(a), np.sin(a), z], 1)
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        return (p * rng.uniform(0.5, 2.0, 3)) @ q.T

    a = root / "shapes-256-normals-colours"
    for shape in ("sphere", "box", "disc", "cylinder"):
        (a / shape).mkdir(parents=True, exist_ok=True)
        for i in range(12):
            pts = cylinder(256) if shape == "cylinder" else _cloud(shape, 256, rng)
            pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
            pc.estimate_normals()
            pc.colors = o3d.utility.Vector3dVector(rng.uniform(0, 1, (256, 3)))
            o3d.io.write_point_cloud(str(a / shape / f"{shape}_{i}.ply"), pc)
    b = root / "shapes-4096-noisy"
    for shape in ("sphere", "box", "disc"):
        (b / shape).mkdir(parents=True, exist_ok=True)
        for i in range(12):
            pts = _cloud(shape, 4096, rng)
            pts += rng.normal(0, 0.05 * np.abs(pts).max(), pts.shape)
            out = rng.random(4096) < 0.05
            pts[out] = rng.uniform(-2, 2, (int(out.sum()), 3))
            np.savetxt(b / shape / f"{shape}_{i}.xyz", pts, fmt="%.5f")
    pre, ft = README_PRETRAIN["pointcloud"], README_FINETUNE["pointcloud"]
    return [Cell("pointcloud", "256 points, normals + colours (.ply), 4 shapes", a, "pointcloud-pointmae-tiny", 48, 4,
                 None, pre, ft),
            Cell("pointcloud", "4,096 points, noise 5% + 5% outliers (.xyz)", b, "pointcloud-pointmae-tiny", 36, 3,
                 None, pre, ft)]


def graph_sets(root: Path) -> list[Cell]:
    """One graph of 240 nodes in 3 SBM communities (nodes.csv: id, two noisy features, ``community``; each edge
    listed once): node classification; 45 graphs of 20–30 nodes, SBM vs Erdős–Rényi vs Barabási–Albert at a
    similar mean degree, node features uniform noise (the class is only in the structure)."""
    import networkx as nx
    import pandas as pd
    rng = np.random.default_rng(4)
    a = root / "sbm-nodes"
    a.mkdir(parents=True, exist_ok=True)
    sizes = [80, 80, 80]
    g = nx.stochastic_block_model(sizes, [[0.08 if i == j else 0.01 for j in range(3)] for i in range(3)], seed=4)
    comm = np.repeat(np.arange(3), sizes)
    pd.DataFrame({"id": np.arange(240), "f0": rng.normal(0, 1, 240) + 0.3 * comm, "f1": rng.normal(0, 1, 240),
                  "community": [f"c{c}" for c in comm]}).to_csv(a / "nodes.csv", index=False)
    pd.DataFrame(list(g.edges()), columns=["source", "target"]).to_csv(a / "edges.csv", index=False)
    b = root / "sbm-er-ba"
    b.mkdir(parents=True, exist_ok=True)
    nodes, edges = [], []
    for kind in ("sbm", "er", "ba"):
        for i in range(15):
            n, seed = int(rng.integers(20, 31)), int(rng.integers(1 << 30))
            if kind == "sbm":
                h = nx.stochastic_block_model([n // 2, n - n // 2], [[0.4, 0.02], [0.02, 0.4]], seed=seed)
            elif kind == "er":
                h = nx.gnp_random_graph(n, 4.0 / n, seed=seed)
            else:
                h = nx.barabasi_albert_graph(n, 2, seed=seed)
            gid = f"{kind}-{i}"
            nodes += [{"graph": gid, "id": v, "x0": float(rng.uniform()), "x1": float(rng.uniform()), "kind": kind}
                      for v in range(n)]
            edges += [{"graph": gid, "source": u, "target": v} for u, v in h.edges()]
    pd.DataFrame(nodes).to_csv(b / "nodes.csv", index=False)
    pd.DataFrame(edges).to_csv(b / "edges.csv", index=False)
    ft = README_FINETUNE["graph"]
    return [Cell("graph", "one graph, 240 nodes, 3 SBM communities (nodes)", a, "graph-graphmae-motifs", 240, 3,
                 "community", finetune_args=ft),
            Cell("graph", "SBM vs ER vs BA, 20–30 nodes, noise features", b, "graph-graphmae-motifs", 45, 3, "kind",
                 finetune_args=ft)]


def tabular_sets(root: Path) -> list[Cell]:
    """300 accounts: an id, a signup date whose tenure (> 2 years) decides ``churned``, spend and region with 15%
    missing; 500 orders whose ``segment`` follows a 60-value ``city`` (each city leans to one of 3 segments) plus a
    number."""
    import pandas as pd
    rng = np.random.default_rng(5)
    root.mkdir(parents=True, exist_ok=True)
    n = 300
    signup = np.datetime64("2026-06-01") - rng.integers(30, 1500, n).astype("timedelta64[D]")
    tenure = (np.datetime64("2026-06-01") - signup).astype(int)
    spend = rng.normal(60, 20, n)
    region = rng.choice(["north", "south", "east", "west"], n).astype(object)
    spend[rng.random(n) < 0.15] = np.nan
    region[rng.random(n) < 0.15] = None
    churned = np.where((tenure < 730) ^ (rng.random(n) < 0.05), "yes", "no")
    pd.DataFrame({"account_id": [f"A-{i:05d}" for i in rng.permutation(n)], "signup": signup.astype(str),
                  "spend": spend.round(2), "region": region, "churned": churned}).to_csv(root / "accounts.csv",
                                                                                         index=False)
    m = 500
    cities = [f"city_{i:02d}" for i in range(60)]
    lean = rng.integers(0, 3, 60)
    city = rng.integers(0, 60, m)
    seg = np.where(rng.random(m) < 0.8, lean[city], rng.integers(0, 3, m))
    pd.DataFrame({"city": [cities[c] for c in city], "basket": rng.lognormal(3, 0.5, m).round(2),
                  "channel": rng.choice(["web", "app", "store"], m),
                  "segment": np.array(["A", "B", "C"])[seg]}).to_csv(root / "orders.csv", index=False)
    ft = README_FINETUNE["tabular"]
    return [Cell("tabular", "date column (tenure), 15% missing, id column", root / "accounts.csv",
                 "tabular-tjepa-mlc-churn", n, 2, "churned", finetune_args=ft),
            Cell("tabular", "60-value category decides the class", root / "orders.csv", "tabular-tjepa-mlc-churn", m,
                 3, "segment", finetune_args=ft)]


def events_sets(root: Path) -> list[Cell]:
    """60 clients of 4 segments whose times carry UTC offsets (+02:00, -05:00, +05:30, Z), the segment in the shop
    mix; 100 users of 2 segments with 3–300 events each (column ``user``, ``ts``), the segment in the amounts."""
    import pandas as pd
    rng = np.random.default_rng(6)
    root.mkdir(parents=True, exist_ok=True)
    mixes = {"grocer": [0.7, 0.1, 0.1, 0.1], "traveller": [0.1, 0.7, 0.1, 0.1], "driver": [0.1, 0.1, 0.7, 0.1],
             "gamer": [0.1, 0.1, 0.1, 0.7]}
    shops = ["food", "air", "fuel", "games"]
    offsets = ["+02:00", "-05:00", "+05:30", "Z"]
    rows = []
    for segment, mix in mixes.items():
        for i in range(15):
            k = int(rng.integers(15, 40))
            tz = offsets[int(rng.integers(0, 4))]
            t = np.datetime64("2026-01-01T00:00") + np.cumsum(rng.integers(600, 86_400, k)).astype("timedelta64[s]")
            rows += [{"client": f"{segment}-{i}", "time": f"{ti}{tz}", "shop": s, "amount": round(float(x), 2),
                      "segment": segment}
                     for ti, s, x in zip(t, rng.choice(shops, k, p=mix), rng.lognormal(3, 1, k))]
    pd.DataFrame(rows).sample(frac=1.0, random_state=6).to_csv(root / "tz-offsets.csv", index=False)
    rows = []
    for segment, mu in (("small", 2.5), ("big", 3.5)):
        for i in range(50):
            k = int(np.exp(rng.uniform(np.log(3), np.log(300))))
            t = np.datetime64("2026-01-01T00:00") + np.cumsum(rng.integers(60, 40_000, k)).astype("timedelta64[s]")
            rows += [{"user": f"{segment}-{i}", "ts": str(ti), "mcc": str(c), "amount": round(float(x), 2),
                      "segment": segment}
                     for ti, c, x in zip(t, rng.integers(5000, 5010, k), rng.lognormal(mu, 0.8, k))]
    pd.DataFrame(rows).to_csv(root / "users-3-300.csv", index=False)
    return [Cell("events", "time with UTC offsets, 4 segments", root / "tz-offsets.csv", "events-coles-tiny", 60, 4,
                 "segment", ["--set", "processor.entity_column=client"], README_FINETUNE["events"]),
            Cell("events", "3–300 events per user, segment in the amounts", root / "users-3-300.csv",
                 "events-coles-tiny", 100, 2, "segment",
                 ["--set", "processor.entity_column=user", "--set", "processor.time_column=ts"],
                 README_FINETUNE["events"])]


GENERATED: dict[str, Callable[[Path], list[Cell]]] = {"audio": audio_sets, "video": video_sets,
                                                      "pointcloud": pointcloud_sets, "graph": graph_sets,
                                                      "tabular": tabular_sets, "events": events_sets}


SLOW = {"audio", "video", "pointcloud"}                     # minutes a cell on 2 CPU cores: run after the others


def sample_cell(name: str, root: Path) -> Cell:
    """The modality's own sample set, with the README's extras (a plugin the README does not name: its own)."""
    import zoo
    s = zoo.get_modality(name).sample_data(root)
    pre = list(README_PRETRAIN.get(name, []))
    if name == "tabular":
        pre += ["--exclude", "customer_id"]
    if name == "events":
        pre += ["--set", "processor.entity_column=client"]
    ft = README_FINETUNE.get(name, s.finetune_args)
    return Cell(name, "sample", Path(s.data), s.recipe, _count_examples(Path(s.data), s.label_column), s.num_classes,
                s.label_column, pre, list(ft))


def _count_examples(data: Path, label_column: str | None) -> int:
    """Files in class folders, rows of a table, entities of an event log, graphs of a graph folder."""
    import pandas as pd
    if data.is_dir() and (data / "nodes.csv").is_file():
        nodes = pd.read_csv(data / "nodes.csv")
        return int(nodes["graph"].nunique()) if "graph" in nodes else len(nodes)
    if data.is_dir():
        return sum(1 for p in data.rglob("*") if p.is_file())
    frame = pd.read_csv(data)
    entity = next((c for c in ("client", "entity", "user") if c in frame), None)
    return int(frame[entity].nunique()) if entity and "amount" in frame else len(frame)


# --- running one cell -------------------------------------------------------------------------------------------
def _zoo(*args: str) -> dict[str, Any]:
    """``zoo ARGS`` in this process; its JSON summary (stdout), or a RuntimeError with its stderr's tail."""
    from pipelines.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    if code != 0:
        raise RuntimeError(f"zoo {args[0]} exited {code}: {err.getvalue()[-800:]}")
    text = out.getvalue()
    return json.loads(text[text.index("{"):])


def run_cell(cell: Cell, work: Path) -> dict[str, Any]:
    """Pretrain, fine-tune, fine-tune from random init; the row of the table."""
    from pipelines.evaluate import recorded_recipe
    from pipelines.finetune import finetune
    from pipelines.recipe import parse_recipe
    label = ["--label-column", cell.label_column] if cell.label_column else []
    run = work / f"{cell.modality}-{cell.data.name}"
    t0 = time.perf_counter()
    pre = _zoo("pretrain", cell.recipe, "--data", str(cell.data), *label, *STEPS, *cell.pretrain_args,
               "--output", str(run / "pretrain"), "--no-resume")
    model = Path(pre["model_dir"]) if "model_dir" in pre else run / "pretrain" / "model"
    ft = _zoo("finetune", str(model), "--data", str(cell.data), *label, *cell.finetune_args,
              "--output", str(run / "finetune"), "--no-resume")
    settings = {}
    if "--lr" in cell.finetune_args:
        settings["lr"] = float(cell.finetune_args[cell.finetune_args.index("--lr") + 1])
    recipe = parse_recipe(recorded_recipe(str(model)), f"the recipe recorded by {model}")
    scratch = finetune(model, recipe, run / "scratch", resume=False, from_scratch=True, settings=settings,
                       data=str(cell.data), label_column=cell.label_column)
    base = ft.get("baseline") or {}
    return {"fine_tuned": ft["test_accuracy"], "random_init": scratch["test_accuracy"],
            "baseline": base.get("baseline"), "baseline_value": base.get("baseline_value"),
            "beaten": base.get("reaches", base.get("beaten")),                  # reaches it (a tie counts)
            "scratch_baseline_value": (scratch.get("baseline") or {}).get("baseline_value"),
            "steps": ft["steps"], "scratch_steps": scratch["steps"],
            "seconds": round(time.perf_counter() - t0, 1)}


def cells(root: Path) -> list[Cell]:
    """Every installed modality's sample set and its generated sets (a modality without a generator here: the
    sample set alone)."""
    import zoo
    per: list[list[Cell]] = []
    for name in zoo.installed():
        per.append([sample_cell(name, root / name / "sample"),
                    *(GENERATED[name](root / name / "generated") if name in GENERATED else [])])
    # the slow modalities last, the sets of other shapes before the sample sets (which the conformance suite
    # already runs), round by round: a run cut short covers the most new shapes
    order = [c for k in range(max(map(len, per), default=0)) for c in (m[k] for m in per if k < len(m))]
    return sorted(order, key=lambda c: (c.modality in SLOW, c.name == "sample"))


def _fmt(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def run(out: Path, report_only: bool = False) -> str:
    """Every cell not yet in ``cells.jsonl`` run (``report_only``: none, the table of those finished), the table
    printed and written."""
    logging.getLogger("pipelines").setLevel(logging.WARNING)
    log_path = out / "cells.jsonl"
    done = {}
    if log_path.is_file():
        for line in log_path.read_text().splitlines():
            row = json.loads(line)
            if "error" not in row or report_only:          # a crashed cell runs again
                done[(row["modality"], row["data set"])] = row
    rows = []
    for cell in ([] if report_only else cells(out / "data")):
        key = (cell.modality, cell.name)
        if key not in done:
            print(f"{cell.modality}: {cell.name} ...", flush=True)
            try:
                res = run_cell(cell, out / "runs")
            except Exception as err:          # a crash is a finding: said in the table, the others still run
                traceback.print_exc()
                res = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
            row = {"modality": cell.modality, "data set": cell.name, "examples": cell.examples,
                   "classes": cell.classes, **{k: v for k, v in asdict(cell).items() if k in ("recipe",
                                                                                         "label_column")},
                   "data": str(cell.data), "pretrain_args": cell.pretrain_args,
                   "finetune_args": cell.finetune_args, **res}
            with open(log_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            done[key] = row
            print(json.dumps(row), flush=True)
        rows.append(done[key])
    if report_only:
        rows = list(done.values())
    reached = sum(1 for r in rows if r.get("beaten"))
    lines = ["### Own data: fine-tuned vs random init vs the hand-made baseline (issue #32)", "",
             f"Machine: {machine()}. `zoo pretrain RECIPE --data D {' '.join(STEPS)}` (+ the README's extras), "
             "`zoo finetune MODEL --data D` (+ the README's `--lr`), and the same fine-tuning from random init; "
             "test accuracy on the run's held-out split (a seeded, stratified fifth).", "",
             "| modality | data set | examples/classes | fine-tuned | random init | baseline (name) "
             "| reaches baseline? |",
             "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['modality']} | {r['data set']} | {r['examples']}/{r['classes']} | error | error | — | "
                         f"crash: {r['error'][:120].replace('|', '/')} |")
            continue
        lines.append(f"| {r['modality']} | {r['data set']} | {r['examples']}/{r['classes']} | {_fmt(r['fine_tuned'])} "
                     f"| {_fmt(r['random_init'])} | {_fmt(r['baseline_value'])} ({r['baseline']}) | "
                     f"{'yes' if r['beaten'] else 'no'} |")
    lines += ["", f"{reached} of {len(rows)} cells reach the baseline."]
    (out.parent / "own-data.json").write_text(json.dumps({"machine": machine(), "date": time.strftime("%Y-%m-%d"),
                                                          "rows": rows}, indent=2) + "\n")
    return publish_table(lines, out.parent / "own-data.md")


def main() -> str:
    return run(results_dir("own-data"))


if __name__ == "__main__":
    import argparse
    import os
    os.environ.setdefault("TQDM_DISABLE", "1")
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out", nargs="?", default=None, help="default: bench/results/own-data")
    p.add_argument("--report", action="store_true", help="no run: the table of the cells finished so far")
    args = p.parse_args()
    target = Path(args.out) if args.out else results_dir("own-data")
    target.mkdir(parents=True, exist_ok=True)
    run(target, report_only=args.report)
