"""`python -m jobs.package`: build the artifact a cluster runs (the code lives in jobs.aws.package)."""

import sys

from jobs.aws.package import main

if __name__ == "__main__":
    sys.exit(main())
