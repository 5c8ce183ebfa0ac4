"""`make demo`: the whole pipeline on the embedded default, watched live, then its results.

    python -m jobs.demo [--config conf/local.yaml] [--duration 60] [--kafka-port 9092] [--set key=value ...]

1. Starts what it needs: the local Kafka broker (a running `make up` broker on the configured port is reused;
   a port taken by anything else makes the demo start its own broker on a free port), and moto when the
   profile's storage.root is on an S3 endpoint of this machine.
2. Runs the streaming job (`python -m jobs.stream_signals`) and then the simulator (`python -m simulator run`:
   120 symbols on an accelerated simulated clock, with a few duplicates, out-of-order, too-late and malformed
   records), both as subprocesses, for --duration seconds, showing ticks/s, batches and signals as the job
   commits them (read from the pipeline_metrics Delta table).
3. Lets the job drain the topic, stops it between two micro-batches, then prints the latest signal per
   symbol (the v_latest_signals view on the local SQL engine), the quarantine counts by reason next to what the
   simulator injected, and writes charts for the symbols with the most crossovers.

Everything lives under --data-dir (default .local/demo), which is emptied at the start: each run starts from
a clean slate on a fresh topic, so running it twice works and the counts always reconcile. Whatever the demo
started is stopped at the end, also on Ctrl-C or SIGTERM; if the demo itself was killed, the next run stops
what the previous one left behind.

The parts: `plan` (options and what the demo writes), `processes` (starting and stopping what it needs),
`monitor` (the live progress and the run), `render` (rich panels and tables), `results` (latest signals,
quarantine reconciliation, charts), `main` (the entry point).
"""

from jobs.devstack.demo.main import Interrupted, main
from jobs.devstack.demo.monitor import Monitor, Progress, run_pipeline
from jobs.devstack.demo.plan import (
    DEFAULT_DATA_DIR,
    DEMO_ENTRIES,
    LATEST_SQL,
    QUARANTINE_SQL,
    STATE_FILE,
    DemoError,
    Plan,
    build_parser,
    plan_from_args,
)
from jobs.devstack.demo.processes import Processes, Started, reset_data_dir, stop_leftovers
from jobs.devstack.demo.results import show_results

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEMO_ENTRIES",
    "LATEST_SQL",
    "QUARANTINE_SQL",
    "STATE_FILE",
    "DemoError",
    "Interrupted",
    "Monitor",
    "Plan",
    "Processes",
    "Progress",
    "Started",
    "build_parser",
    "main",
    "plan_from_args",
    "reset_data_dir",
    "run_pipeline",
    "show_results",
    "stop_leftovers",
]
