"""``python -m cli``: the same as the ``adjoint-sampling`` console script."""

import sys

from cli.main import main

sys.exit(main())
