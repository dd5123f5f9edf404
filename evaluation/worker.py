"""A child eval worker: ``python -m mrbench.evaluation.worker CONFIG_JSON``, started by
:func:`mrbench.evaluation.distributed.spawn` (its own module: the runner imports the distributed module, not back)."""

from __future__ import annotations

import json
import sys

from mrbench.evaluation.config import EvalConfig, eval_config
from mrbench.evaluation.runner import run_eval
from mrbench.log import setup_logging


def main(argv: list[str]) -> int:
    """Run the worker's slice of the eval described by the JSON config ``argv[0]``."""
    setup_logging("WARNING")
    run_eval(config=eval_config(EvalConfig(**json.loads(argv[0]))))
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a child process
    sys.exit(main(sys.argv[1:]))
