"""`python -m uprnlink`: the `uprnlink` command line."""

import sys

from uprnlink.cli import main

if __name__ == "__main__":
    sys.exit(main())
