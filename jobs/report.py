"""`python -m jobs.report`: charts of the signals table (the code lives in jobs.lake.report)."""

import sys

from jobs.lake.report import main

if __name__ == "__main__":
    sys.exit(main())
