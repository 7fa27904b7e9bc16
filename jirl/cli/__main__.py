"""`python -m jirl.cli ...` runs the `jirl` command."""

import sys

from jirl.cli import main

sys.exit(main())
