"""``python -m genrec.cli``: the ``genrec`` command."""
import sys

from genrec.cli import main

sys.exit(main())
