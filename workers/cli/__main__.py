"""`python -m workers.cli`, what scripts/arena runs."""

import sys

from workers.cli.main import main

sys.exit(main())
