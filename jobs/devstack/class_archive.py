"""The driver's class-data archive: the classes a local Spark driver loads, stored once so every start maps them.

A local driver JVM loads and verifies ~20,000 classes (Spark, Delta, Hadoop) before its first batch: ~8 s of
session start and part of each first query on 2 cores. `make setup` runs the job's warm-up (every step of a
micro-batch, on scratch tables) in a driver started with `-XX:ArchiveClassesAtExit`; the JVM writes the archive as
it exits. Local drivers then start with `-XX:SharedArchiveFile` (jobs.pipeline.spark_session, `spark.class_archive`).

The archive belongs to one JDK build and one Spark class path: when either changes, the JVM ignores it (the driver
starts as it would without) and `make setup` builds it again.

    python -m jobs.devstack.class_archive --out .jars/spark-classes.jsa
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from jobs.pipeline.config import REPO_ROOT, load_config, resolve_local_path

DEFAULT_PROFILE = REPO_ROOT / "conf" / "local.yaml"


def build_archive(out: Path, profile: Path = DEFAULT_PROFILE, timeout_seconds: float = 600) -> int:
    """Run the warm-up in a driver that archives its classes at exit; returns the archive's size in bytes."""
    from jobs.pipeline.spark_session import CDS_LOG_OFF, build_spark
    from jobs.pipeline.warm_up import warm_up

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="class-archive-") as scratch:
        config = load_config(
            profile,
            [
                f"storage.root={scratch}/delta",
                f"storage.checkpoint_root={scratch}/checkpoints",
                "spark.class_archive=null",
                f'spark.conf={{"spark.driver.extraJavaOptions": "-XX:ArchiveClassesAtExit={partial} {CDS_LOG_OFF}"}}',
            ],
            environ={},
        )
        spark = build_spark(config)
        driver = spark.sparkContext._gateway.proc  # type: ignore[union-attr]
        warm_up(spark, config)
        spark.stop()
        # The driver exits when its standard input closes, and writes the archive on the way out.
        driver.stdin.close()
        driver.wait(timeout=timeout_seconds)
    if not partial.is_file() or partial.stat().st_size == 0:
        raise RuntimeError(f"the driver wrote no class archive at {partial}")
    os.replace(partial, out)
    return out.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.devstack.class_archive",
        description="Build the local Spark driver's class-data archive (JVM CDS) from a run of the job's warm-up.",
    )
    parser.add_argument("--out", default=".jars/spark-classes.jsa", help="archive file (default %(default)s)")
    parser.add_argument(
        "--config", default=str(DEFAULT_PROFILE), help="profile whose Spark settings the driver uses (default local)"
    )
    args = parser.parse_args(argv)
    out = resolve_local_path(args.out)
    try:
        size = build_archive(out, Path(args.config))
    except Exception as error:  # one line for make; the driver's own log is above it
        print(f"error: class archive not built: {error}", file=sys.stderr)
        return 1
    print(f"class archive {out} ({size / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
