"""``python -m service.cli``: the same as the ``vmemlab`` command."""
import sys

from . import main

sys.exit(main())
