"""`python -m jobs.athena`: deploy the views of sql/ to Athena (the code lives in jobs.aws.athena)."""

import sys

from jobs.aws.athena import main

if __name__ == "__main__":
    sys.exit(main())
