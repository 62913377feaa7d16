"""``python -m node [flags]``: run a compute node (see ``node.main``)."""

import sys

from node.main import main

sys.exit(main())
