"""`python -m jobs.demo`: the pipeline end to end on the local stack (the code lives in jobs.devstack.demo)."""

import sys

from jobs.devstack.demo import main

if __name__ == "__main__":
    sys.exit(main())
