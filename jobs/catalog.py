"""`python -m jobs.catalog`: register the Delta tables in the Glue catalog (the code lives in jobs.aws.glue)."""

import sys

from jobs.aws.glue import main

if __name__ == "__main__":
    sys.exit(main())
