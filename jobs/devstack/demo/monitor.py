"""The live monitor: progress read from pipeline_metrics and the topic, and the run it watches."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from jobs.devstack.demo.plan import DemoError, Plan
from jobs.devstack.demo.processes import Processes, check_alive, start_simulator, start_stream_job, stop_stream_job
from jobs.devstack.demo.render import progress_line, progress_table
from jobs.devstack.services import log_tail
from jobs.pipeline.config import AppConfig


@dataclass
class Progress:
    batches: int = 0
    records_read: int = 0
    ticks: int = 0
    quarantined: int = 0
    duplicates: int = 0
    signals_emitted: int = 0
    signals_corrected: int = 0
    last_batch_ms: int = 0
    produced: int = 0


class Monitor:
    """Polls pipeline_metrics (deltalake) and the topic's end offsets (Kafka)."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.consumer: Any = None
        self.partitions: list[Any] = []
        self.history: list[tuple[float, int, int]] = []  # (time, records read, records sent)

    def tables_exist(self) -> bool:
        from jobs.lake.delta_log import open_delta_table

        return open_delta_table(self.config, "pipeline_metrics") is not None

    def produced(self) -> int:
        from kafka import KafkaConsumer, TopicPartition

        try:
            if self.consumer is None:
                self.consumer = KafkaConsumer(
                    bootstrap_servers=self.config.kafka.bootstrap_servers, request_timeout_ms=5000
                )
            if not self.partitions:
                ids = self.consumer.partitions_for_topic(self.config.kafka.topic) or set()
                self.partitions = [TopicPartition(self.config.kafka.topic, p) for p in sorted(ids)]
            return sum(self.consumer.end_offsets(self.partitions).values()) if self.partitions else 0
        except Exception:  # noqa: BLE001 - progress display only
            return 0

    def poll(self) -> Progress:
        from jobs.lake.delta_log import open_delta_table, read_delta_arrow

        progress = Progress(produced=self.produced())
        table = open_delta_table(self.config, "pipeline_metrics")
        if table is not None:
            frame = read_delta_arrow(table).to_pandas()
            if not frame.empty:
                progress.batches = len(frame)
                for name in ("records_read", "quarantined", "duplicates", "signals_emitted", "signals_corrected"):
                    setattr(progress, name, int(frame[name].sum()))
                progress.ticks = int(frame["ticks_written"].sum())
                progress.last_batch_ms = int(frame.sort_values("batch_id")["batch_duration_ms"].iloc[-1])
        self.history.append((time.monotonic(), progress.records_read, progress.produced))
        return progress

    def rates(self, window: float = 10.0) -> tuple[float, float]:
        """(sent, read) records per second over the last `window` seconds (batches land in bursts)."""
        if len(self.history) < 2:
            return 0.0, 0.0
        now, read, sent = self.history[-1]
        then, read_then, sent_then = ([h for h in self.history if now - h[0] >= window] or self.history[:1])[-1]
        if now <= then:
            return 0.0, 0.0
        return (sent - sent_then) / (now - then), (read - read_then) / (now - then)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()


def run_pipeline(plan: Plan, processes: Processes, console: Any) -> dict[str, Any]:
    """Stream job + simulator until the fed records are all read (or the drain time is up)."""
    from rich.live import Live

    monitor = Monitor(plan.config)
    started = time.monotonic()
    job = start_stream_job(plan, processes)
    console.print(f"stream job: starting Spark (pid {job.pid}, log {job.log_file})")
    deadline = started + plan.config.services.start_timeout_seconds + 60
    while not monitor.tables_exist():
        check_alive(job, "the streaming job")
        if job.process is not None and job.process.poll() is not None:
            raise DemoError(f"the streaming job stopped before creating its tables; see {job.log_file}")
        if time.monotonic() > deadline:
            tail = log_tail(job.log_file, lines=25)
            raise DemoError(f"the streaming job did not create its tables in time; see {job.log_file}:\n{tail}")
        time.sleep(0.5)
    console.print(f"stream job: tables ready under {plan.config.storage.root} after {time.monotonic() - started:.0f} s")
    simulator, summary_path = start_simulator(plan, processes)
    console.print(
        f"simulator: {plan.symbols} symbols x {plan.ticks_per_symbol} ticks at {plan.speed:g}x "
        f"simulated speed for ~{plan.duration:.0f} s, seed {plan.seed} (log {simulator.log_file})"
    )

    feed_started = time.monotonic()
    summary: dict[str, Any] | None = None
    drain_deadline: float | None = None
    last_line = 0.0
    interactive = console.is_terminal
    live = Live(console=console, refresh_per_second=2, transient=False) if interactive else None
    if live is not None:
        live.start()
    progress = Progress()
    try:
        while True:
            progress = monitor.poll()
            elapsed = time.monotonic() - feed_started
            check_alive(job, "the streaming job")
            assert job.process is not None
            if job.process.poll() is not None:
                raise DemoError(
                    f"the streaming job stopped early; see {job.log_file}:\n{log_tail(job.log_file, lines=25)}"
                )
            if summary is None and simulator.process is not None and simulator.process.poll() is not None:
                check_alive(simulator, "the simulator")
                summary = json.loads(summary_path.read_text())
                drain_deadline = time.monotonic() + plan.drain_seconds
            phase = "feeding" if summary is None else "draining"
            rate = monitor.rates()
            if live is not None:
                live.update(progress_table(progress, rate, elapsed, phase))
            elif time.monotonic() - last_line >= 5:
                print(progress_line(progress, rate, elapsed, phase), flush=True)
                last_line = time.monotonic()
            if summary is not None and progress.records_read >= summary["sent"]:
                break
            if summary is not None and drain_deadline is not None and time.monotonic() > drain_deadline:
                console.print(
                    f"[yellow]the job read {progress.records_read:,} of {summary['sent']:,} records "
                    f"within the {plan.drain_seconds:.0f} s drain time; stopping it anyway[/]"
                )
                break
            time.sleep(2)
    finally:
        if live is not None:
            live.stop()
    console.print("stream job: stopping after its current micro-batch")
    stop_stream_job(job, grace=plan.drain_seconds + 60)
    # The batch running at the stop commits after the last poll: count it too.
    progress = monitor.poll()
    monitor.close()
    if not interactive:
        print(progress_line(progress, monitor.rates(), time.monotonic() - feed_started, "stopped"), flush=True)
    else:
        console.print(progress_table(progress, monitor.rates(), time.monotonic() - feed_started, "stopped"))
    return {
        "simulator": summary or {},
        "progress": asdict(progress),
        "feed_seconds": round(time.monotonic() - feed_started, 1),
    }
