"""Run ``lift_integrations.cli.main`` once per argument list, in one process of a torchrun group.

``python -m torch.distributed.run --nproc_per_node 2 cli_runs.py '[["--mode", "shard", ...], [...]]'``:
several CLI runs share one launch (starting the processes costs more than the tiny absorptions). The
process group is initialised once, from torchrun's environment as ``lift-absorb`` does, and every run
uses it: destroying a group and initialising another in the same launch is unreliable in torch (the new
group may read the old one's addresses from torchrun's store).
"""

from __future__ import annotations

import json
import sys

import torch.distributed as dist

from lift_integrations.cli import main
from lift_integrations.distributed import init_from_env

if __name__ == "__main__":
    context = init_from_env()
    assert context is not None and context.backend == "gloo" and context.world_size == 2, context
    try:
        for argv in json.loads(sys.argv[1]):
            main(argv)
    finally:
        dist.destroy_process_group()
