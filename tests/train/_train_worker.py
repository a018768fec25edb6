"""Worker for tests/train/test_trainer_dist.py: run several training jobs in one `torchrun` launch.

Usage: torchrun ... tests/train/_train_worker.py SPEC.json, where SPEC.json is {"jobs": [[override, ...], ...]}.
The process group is created once and adopted by every `train()` call (torchrun startup is the slow part).
"""

import json
import sys
import warnings

from srlm_fast import distributed as D
from srlm_fast.config import load_job_config
from srlm_fast.train.config import TrainConfig
from srlm_fast.train.trainer import train


def main() -> None:
    warnings.filterwarnings("ignore")
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    info = D.init_distributed("cpu")
    try:
        for overrides in spec["jobs"]:
            train(load_job_config(TrainConfig, None, overrides))
    finally:
        D.shutdown(info)


if __name__ == "__main__":
    main()
    D.exit_without_teardown(0)  # torch's leftover gloo threads can abort a finished worker at teardown
