"""python -m asyncpool: the asyncpool command."""

import sys

from ._cli import main

sys.exit(main())
