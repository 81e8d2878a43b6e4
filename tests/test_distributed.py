"""Cross-rank losses: a 2-process gloo run gives the gradients of one process on the whole batch.

Each rank holds a different number of rows (5 and 3) of the same global batch and a
DDP-wrapped linear "projector". After backward, every rank's parameter gradients (DDP-averaged)
must equal those of a single process on the concatenated batch, and each rank's input gradient
must be ``world_size`` times the single-process gradient of its rows (the convention documented
in ``raysweep.distributed``). A raw ``dist.all_reduce`` is shown to give parameter gradients
scaled by 1/world_size (lightly issue 1977), so the test can tell the two apart. SupCon's
classes span both ranks (each has positives on the other); a gather without a backward
collective gives its loss but not its gradients, which the test tells apart too.

This file doubles as the worker script: ``python test_distributed.py RANK INIT_FILE OUT``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from raysweep import distributed as rd
from raysweep.ssl import barlow_twins_loss, nt_xent_loss, supcon_loss

WORLD = 2
ROWS = (5, 3)  # uneven on purpose
IN_DIM, OUT_DIM = 6, 4
#: The global batch's classes: every class has rows on both ranks.
LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])

LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "barlow_twins": lambda za, zb, y: barlow_twins_loss(za, zb, lambda_offdiag=0.3),
    "nt_xent": lambda za, zb, y: nt_xent_loss(za, zb, temperature=0.2),
    "supcon": lambda za, zb, y: supcon_loss(za, zb, y, temperature=0.2),
}


def make_problem() -> tuple[torch.Tensor, torch.Tensor, torch.nn.Linear]:
    g = torch.Generator().manual_seed(0)
    x_a = torch.randn(sum(ROWS), IN_DIM, generator=g, dtype=torch.float64)
    x_b = x_a + 0.5 * torch.randn(sum(ROWS), IN_DIM, generator=g, dtype=torch.float64)
    layer = torch.nn.Linear(IN_DIM, OUT_DIM).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(OUT_DIM, IN_DIM, generator=g))
        layer.bias.copy_(torch.randn(OUT_DIM, generator=g))
    return x_a, x_b, layer


def gradients(
    model: torch.nn.Module, layer: torch.nn.Linear, x_a: torch.Tensor, x_b: torch.Tensor, name: str,
    labels: torch.Tensor,
) -> dict[str, torch.Tensor]:
    layer.zero_grad()
    x_a, x_b = x_a.clone().requires_grad_(), x_b.clone().requires_grad_()
    z = model(torch.cat([x_a, x_b]))  # one forward per backward, as DDP expects
    loss = LOSSES[name](*z.split(x_a.shape[0]), labels)
    loss.backward()
    return {
        "loss": loss.detach(),
        "weight": layer.weight.grad.clone(),
        "bias": layer.bias.grad.clone(),
        "x_a": x_a.grad,
        "x_b": x_b.grad,
    }


def _raw_all_reduce_of_cross_correlation(t: torch.Tensor) -> torch.Tensor:
    """The reference implementation's bug: SyncBatchNorm-style (autograd-aware) batch statistics,
    but a raw ``dist.all_reduce`` of the (2-D) cross-correlation: right value, local gradient."""
    if t.ndim < 2:
        return rd.all_reduce_sum(t)
    reduced = t.detach().clone()
    torch.distributed.all_reduce(reduced)
    return t + (reduced - t).detach()


def _gather_without_backward(t: torch.Tensor) -> torch.Tensor:
    """Every rank's rows, but the other ranks' rows detached: the loss of the global batch, and
    the gradient only of this rank's own anchors (a plain ``dist.all_gather``)."""
    gathered = rd.all_gather_with_grad(t.detach())
    rows = slice(sum(ROWS[: rd.get_rank()]), sum(ROWS[: rd.get_rank() + 1]))
    return torch.cat([gathered[: rows.start], t, gathered[rows.stop:]])


def worker(rank: int, init_file: str, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    import raysweep.ssl.losses as losses

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        assert (rd.get_rank(), rd.get_world_size(), rd.is_distributed()) == (rank, WORLD, True)
        x_a, x_b, layer = make_problem()
        rows = slice(sum(ROWS[:rank]), sum(ROWS[: rank + 1]))
        ddp = DistributedDataParallel(layer)
        result = {name: gradients(ddp, layer, x_a[rows], x_b[rows], name, LABELS[rows])
                  for name in LOSSES}
        losses.all_gather_with_grad = _gather_without_backward
        result["raw_supcon"] = gradients(ddp, layer, x_a[rows], x_b[rows], "supcon",
                                         LABELS[rows])
        losses.all_reduce_sum = _raw_all_reduce_of_cross_correlation
        result["raw_barlow_twins"] = gradients(ddp, layer, x_a[rows], x_b[rows], "barlow_twins",
                                               LABELS[rows])
        gathered = rd.all_gather_with_grad(torch.full((ROWS[rank], 2), float(rank)))
        result["gathered"] = gathered
        torch.save(result, out)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_match_one_process_on_the_concatenated_batch(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outs = [tmp_path / f"rank{r}.pt" for r in range(WORLD)]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, str(r), str(tmp_path / "init"), str(outs[r])],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(WORLD)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]

    x_a, x_b, layer = make_problem()
    single = {name: gradients(layer, layer, x_a, x_b, name, LABELS) for name in LOSSES}
    results = [torch.load(out, weights_only=True) for out in outs]
    for rank, result in enumerate(results):
        rows = slice(sum(ROWS[:rank]), sum(ROWS[: rank + 1]))
        for name in LOSSES:
            got, want = result[name], single[name]
            torch.testing.assert_close(got["loss"], want["loss"])
            torch.testing.assert_close(got["weight"], want["weight"])
            torch.testing.assert_close(got["bias"], want["bias"])
            torch.testing.assert_close(got["x_a"], WORLD * want["x_a"][rows])
            torch.testing.assert_close(got["x_b"], WORLD * want["x_b"][rows])
        raw = result["raw_barlow_twins"]
        torch.testing.assert_close(raw["loss"], single["barlow_twins"]["loss"])
        torch.testing.assert_close(raw["weight"], single["barlow_twins"]["weight"] / WORLD)
        # the negative control: SupCon's loss without its backward collective is right, its
        # gradients are not (the comparison above would catch such a loss)
        raw = result["raw_supcon"]
        torch.testing.assert_close(raw["loss"], single["supcon"]["loss"])
        assert not torch.allclose(raw["weight"], single["supcon"]["weight"], rtol=1e-3)
        assert not torch.allclose(raw["x_a"], WORLD * single["supcon"]["x_a"][rows], rtol=1e-3)
        expected_rows = torch.cat([torch.full((n, 2), float(r)) for r, n in enumerate(ROWS)])
        torch.testing.assert_close(result["gathered"], expected_rows)


def test_collectives_are_identities_without_a_process_group() -> None:
    t = torch.randn(3, 2)
    assert (rd.get_world_size(), rd.get_rank(), rd.is_distributed()) == (1, 0, False)
    assert rd.all_reduce_sum(t) is t
    assert rd.all_gather_with_grad(t) is t
    assert rd.all_gather_sizes(7) == [7]


if __name__ == "__main__":
    worker(int(sys.argv[1]), sys.argv[2], sys.argv[3])
