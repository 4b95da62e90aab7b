"""`python -m trim ...` runs the `trim` command (on Colab: `!python -m trim run ...`)."""

import sys

from trim.cli import main

sys.exit(main())
