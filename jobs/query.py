"""`python -m jobs.query`: SQL over the Delta tables with the views of sql/ (the code lives in jobs.lake.query)."""

import sys

from jobs.lake.query import main

if __name__ == "__main__":
    sys.exit(main())
