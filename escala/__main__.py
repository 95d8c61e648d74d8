"""``python -m escala`` is ``escala`` (what torchrun runs with ``-m escala``)."""

import sys

from escala.cli.main import main

sys.exit(main())
