"""`python -m continual_c ARGS`: the same as the `continual` command (continual_c._cli)."""
import sys

from ._cli import main

sys.exit(main())
