"""`python -m jobs.emr`: submit the packaged job to Amazon EMR (the code lives in jobs.aws.emr)."""

import sys

from jobs.aws.emr import main

if __name__ == "__main__":
    sys.exit(main())
