"""Thin entry so the evaluation framework's commands work as written from the repository root:

    accelerate launch --num_machines 1 --num_processes 4 eval.py dataset.name=gsm8k cache=prefix ...
    python eval.py dataset.limit=20

Everything lives in `unmask.evaluation` (same as `unmask eval ...`).
"""

import sys
from pathlib import Path

try:
    from unmask.evaluation import main
except ImportError:  # a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    from unmask.evaluation import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
