"""`python -m jobs.local_stack`: start, stop and inspect the local services (code: jobs.devstack.services)."""

import sys

from jobs.devstack.services import main

if __name__ == "__main__":
    sys.exit(main())
