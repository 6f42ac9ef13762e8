"""Gradients of a network trained outside its DDP wrapper are averaged over processes (two gloo processes)."""

import os
import socket
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from turbosr.train.common import average_gradients


def _worker(rank: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        module = torch.nn.Linear(3, 2)  # same initial weights on both ranks
        x = torch.full((4, 3), float(rank + 1))  # different data per rank
        module(x).pow(2).sum().backward()
        average_gradients(SimpleNamespace(num_processes=2), module)
        results[rank] = [p.grad.clone() for p in module.parameters()]
    finally:
        dist.destroy_process_group()


def test_average_gradients_gives_every_rank_the_mean():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(port, results), nprocs=2, join=True)
        got = dict(results)
    expected = []
    for rank in (0, 1):
        torch.manual_seed(0)
        module = torch.nn.Linear(3, 2)
        module(torch.full((4, 3), float(rank + 1))).pow(2).sum().backward()
        expected.append([p.grad.clone() for p in module.parameters()])
    for rank in (0, 1):
        for grad, first, second in zip(got[rank], *expected, strict=True):
            torch.testing.assert_close(grad, (first + second) / 2)


def test_average_gradients_is_a_no_op_in_one_process():
    module = torch.nn.Linear(3, 2)
    module(torch.ones(1, 3)).sum().backward()
    before = [p.grad.clone() for p in module.parameters()]
    average_gradients(SimpleNamespace(num_processes=1), module)
    for grad, old in zip((p.grad for p in module.parameters()), before, strict=True):
        assert torch.equal(grad, old)
