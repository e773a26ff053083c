"""`python -m unmask ...` is the `unmask` command."""

import sys

from .cli import main

sys.exit(main())
