"""Run under ``torchrun --nproc_per_node 2``: pretrain the toy recipe with DDP (gloo) and check the
cross-rank InfoNCE; every rank writes its weights and what it saw for the test to compare."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from pipelines.build import build
from pipelines.data import TrainData
from pipelines.engine import setup_run, train
from pipelines.recipe import load_recipe
from zoo.objectives import info_nce

out = Path(sys.argv[1])
recipe = load_recipe("toyseq-tiny", ["train.steps=4", "train.batch_size=8", "train.checkpoint_every=2",
                                     "train.num_workers=2"])
ctx = setup_run(recipe.train, out / "run")
built = build(recipe)
data = TrainData(built.data, built.processor, recipe.train, rank=ctx.info.rank, world=ctx.info.world)
result = train(built.pretrainer, data, recipe.train, out / "run", ctx=ctx, record_seen=True)
model = built.pretrainer
rank, world = dist.get_rank(), dist.get_world_size()
if rank == 0:
    model.encoder.save_pretrained(out / "run" / "model", processor=built.processor)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"rank{rank}.safetensors"))

# InfoNCE with gathered negatives vs the same loss computed on the full batch in one process
g = torch.Generator().manual_seed(123)
a_all = torch.randn(world * 3, 5, generator=g, dtype=torch.float64)
b_all = torch.randn(world * 3, 5, generator=g, dtype=torch.float64)
a = a_all[rank * 3:(rank + 1) * 3].clone().requires_grad_(True)
b = b_all[rank * 3:(rank + 1) * 3].clone().requires_grad_(True)
loss = info_nce(a, b, 0.2, gather=True)
(loss / world).backward()   # DDP averages: the mean of rank losses is the full-batch loss
ga, gb = a.grad.clone(), b.grad.clone()
dist.all_reduce(ga := torch.zeros_like(a_all).index_copy_(0, torch.arange(rank * 3, rank * 3 + 3), ga))
dist.all_reduce(gb := torch.zeros_like(b_all).index_copy_(0, torch.arange(rank * 3, rank * 3 + 3), gb))
ar, br = a_all.clone().requires_grad_(True), b_all.clone().requires_grad_(True)
ref = info_nce(ar, br, 0.2)
ref.backward()
total = torch.tensor([loss.item()], dtype=torch.float64)
dist.all_reduce(total)
report = {"seen": result.seen, "gathered_loss": total.item() / world, "reference_loss": ref.item(),
          "grad_matches": bool(torch.allclose(ga, ar.grad, atol=1e-10) and torch.allclose(gb, br.grad, atol=1e-10))}
(out / f"rank{rank}.json").write_text(json.dumps(report))
dist.destroy_process_group()
