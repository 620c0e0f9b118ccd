"""Build the StreamSSL Grafana dashboard with grafana-foundation-sdk and write it as JSON.

    python deploy/grafana/build_dashboard.py            # (re)write deploy/helm/streamssl/files/grafana/streamssl.json
    python deploy/grafana/build_dashboard.py --check    # exit 1, with a diff, if the committed JSON is stale

The committed JSON is what the chart's ConfigMap provisions (monitoring.grafanaDashboard.enabled) and what you can
import by hand; tests/deploy checks it equals this script's output and that every metric its queries use is exported
by the running services. Rows: ingest per camera, trainer (losses, evaluation, throughput, lag, collapse, versions),
serving (rate, latency quantiles, batch size, queue time, model version, reloads, stream mode), anomaly scores per
camera (share above z = 3 against its usual share, z-score quantiles, windows scored).
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh, VariableSort

OUT = Path(__file__).resolve().parents[1] / "helm" / "streamssl" / "files" / "grafana" / "streamssl.json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
CAMERA = 'camera=~"$camera"'
# Everything but the probes and /metrics: what users call (as the alert rules count it).
API = 'endpoint!~"/v2/health/.*|/metrics|unmatched"'
RATE = "$__rate_interval"


def query(expr: str, legend: str = "", ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref).datasource(DATASOURCE)


def series(title: str, description: str, unit: str, *queries: tuple[str, str], width: int = 8) -> timeseries.Panel:
    """A time series panel: one (expr, legend) per query."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(8)
        .fill_opacity(10)
        .legend(common_builder.VizLegendOptions().display_mode(common.LegendDisplayMode.LIST).show_legend(True))
    )
    for index, (expr, legend) in enumerate(queries):
        panel = panel.with_target(query(expr, legend, ref=chr(ord("A") + index)))
    return panel


def single(title: str, description: str, unit: str, expr: str, legend: str = "", width: int = 4) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(4)
        .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]))
        .with_target(query(expr, legend))
    )


def quantiles(metric: str, by: str, selector: str = "") -> list[tuple[str, str]]:
    legend_by = " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(",") if label.strip())
    group = f"{by}, le" if by else "le"
    rate = f"rate({metric}_bucket{{{selector}}}[{RATE}])"
    return [
        (f"histogram_quantile({q}, sum by ({group}) ({rate}))", f"p{int(q * 100)} {legend_by}".strip())
        for q in (0.5, 0.9, 0.99)
    ]


def ingest_row(board: dashboard.Dashboard) -> dashboard.Dashboard:
    p = "streamssl_ingest_"
    return (
        board.with_row(dashboard.Row("Ingest (per camera)"))
        .with_panel(
            single(
                "Cameras up",
                "Cameras delivering frames now",
                "none",
                f"sum(max by (camera) ({p}camera_up{{{CAMERA}}}))",
            )
        )
        .with_panel(
            single(
                "Cameras down",
                "Cameras connected but not delivering frames (alert: StreamSSLCameraDown)",
                "none",
                f"count(max by (camera) ({p}camera_up{{{CAMERA}}}) == 0) or vector(0)",
            )
        )
        .with_panel(
            single(
                "Windows published /s",
                "Windows acknowledged by the bus, all selected cameras",
                "ops",
                f"sum(rate({p}windows_published_total{{{CAMERA}}}[{RATE}]))",
            )
        )
        .with_panel(
            single(
                "Published bytes /s",
                "Bytes of windows acknowledged by the bus",
                "Bps",
                f"sum(rate({p}published_bytes_total{{{CAMERA}}}[{RATE}]))",
            )
        )
        .with_panel(
            single(
                "Windows dropped /s",
                "Windows not published (backpressure, oversize, publish errors; the motion gate's static windows "
                "are not counted here)",
                "ops",
                f'sum(rate({p}windows_dropped_total{{{CAMERA}, reason!="static"}}[{RATE}])) or vector(0)',
            )
        )
        .with_panel(
            single(
                "Decode errors /s",
                "Packets or frames skipped because they did not decode",
                "ops",
                f"sum(rate({p}decode_errors_total{{{CAMERA}}}[{RATE}]))",
            )
        )
        .with_panel(
            series(
                "Camera up",
                "1 while the camera delivers frames",
                "none",
                (f"max by (camera) ({p}camera_up{{{CAMERA}}})", "{{camera}}"),
            )
        )
        .with_panel(
            series(
                "Frames decoded and windows published",
                "Decoded frames /s and published windows /s per camera",
                "ops",
                (f"sum by (camera) (rate({p}frames_decoded_total{{{CAMERA}}}[{RATE}]))", "frames {{camera}}"),
                (f"sum by (camera) (rate({p}windows_published_total{{{CAMERA}}}[{RATE}]))", "windows {{camera}}"),
            )
        )
        .with_panel(
            series(
                "Drops by reason",
                "Windows dropped (backpressure, oversize, static, publish_error) and frames dropped (sampling, "
                "duplicate, partial_window) per camera",
                "ops",
                (
                    f"sum by (camera, reason) (rate({p}windows_dropped_total{{{CAMERA}}}[{RATE}])) > 0",
                    "windows {{camera}} {{reason}}",
                ),
                (
                    f"sum by (camera, reason) "
                    f'(rate({p}frames_dropped_total{{{CAMERA}, reason!="sampling"}}[{RATE}])) > 0',
                    "frames {{camera}} {{reason}}",
                ),
            )
        )
        .with_panel(
            series(
                "Reconnects, stalls, discontinuities",
                "Per camera, over 15 minutes (alert: StreamSSLCameraUnstable above 3)",
                "none",
                (f"sum by (camera) (increase({p}reconnects_total{{{CAMERA}}}[15m]))", "reconnects {{camera}}"),
                (f"sum by (camera) (increase({p}stalls_total{{{CAMERA}}}[15m]))", "stalls {{camera}}"),
                (
                    f"sum by (camera, cause) (increase({p}discontinuities_total{{{CAMERA}}}[15m]))",
                    "segments {{camera}} {{cause}}",
                ),
            )
        )
        .with_panel(
            series(
                "Capture to publish",
                "From the capture of a window's first frame to the bus's acknowledgement",
                "s",
                *quantiles(f"{p}capture_to_publish_seconds", "camera", CAMERA),
            )
        )
        .with_panel(
            series(
                "Publish latency",
                "From send to the bus's acknowledgement",
                "s",
                *quantiles(f"{p}publish_latency_seconds", "camera", CAMERA),
            )
        )
        .with_panel(
            series(
                "Queue depth and JPEG quality steps",
                "Windows waiting between decoding and publishing; quality steps taken to fit the message size",
                "none",
                (f"max by (camera) ({p}queue_depth{{{CAMERA}}})", "queued {{camera}}"),
                (
                    f"sum by (camera) (rate({p}jpeg_quality_steps_total{{{CAMERA}}}[{RATE}]))",
                    "quality steps/s {{camera}}",
                ),
            )
        )
    )


def trainer_row(board: dashboard.Dashboard) -> dashboard.Dashboard:
    p = "streamssl_trainer_"
    return (
        board.with_row(dashboard.Row("Trainer"))
        .with_panel(single("Step", "Current training step (restored from checkpoints)", "none", f"max({p}step)"))
        .with_panel(
            single("Production version", "Registry version production points at", "none", f"max({p}production_version)")
        )
        .with_panel(
            single(
                "Last exported version",
                "Registry version this trainer published last",
                "none",
                f"max({p}last_exported_version)",
            )
        )
        .with_panel(
            single(
                "Windows /s",
                "Windows trained per second over the last progress interval",
                "none",
                f"sum({p}windows_per_second)",
            )
        )
        .with_panel(
            single(
                "Checkpoint age", "Seconds since the last durable checkpoint", "s", f"max({p}checkpoint_age_seconds)"
            )
        )
        .with_panel(
            single(
                "Replay fill",
                "Replay buffer fill (count or bytes, the larger)",
                "percentunit",
                f"max({p}replay_fill_ratio)",
            )
        )
        .with_panel(
            series(
                "Loss by task",
                "Training loss of the last step (total, future, order, pixel)",
                "none",
                (f"max by (task) ({p}loss)", "{{task}}"),
            )
        )
        .with_panel(
            series(
                "Held-out evaluation",
                "Evaluation of the EMA model on held-out windows (order accuracy, future top-1, PSNR gain ...)",
                "none",
                (f"max by (metric) ({p}eval_metric)", "{{metric}}"),
            )
        )
        .with_panel(
            series(
                "Training batch metrics",
                "Accuracy-like numbers of the last training batch",
                "none",
                (f"max by (metric) ({p}train_metric)", "{{metric}}"),
            )
        )
        .with_panel(
            series(
                "Throughput",
                "Windows trained on per second by origin (fresh, replay), and optimiser steps per second",
                "ops",
                (f"sum by (origin) (rate({p}windows_total[{RATE}]))", "windows {{origin}}"),
                (f"sum(rate({p}steps_total[{RATE}]))", "steps"),
            )
        )
        .with_panel(
            series(
                "Step time and data wait",
                "Step wall time quantiles and the share of time spent waiting for data",
                "s",
                *quantiles(f"{p}step_seconds", ""),
                (f"max({p}data_wait_fraction)", "data wait fraction"),
            )
        )
        .with_panel(
            series(
                "Consumer lag",
                "Records on each partition not yet taken by the trainer (alert: StreamSSLTrainerLagGrowing)",
                "none",
                (f"sum by (partition) ({p}consumer_lag_records)", "partition {{partition}}"),
            )
        )
        .with_panel(
            series(
                "Embedding collapse",
                "Effective rank (collapse: 1) and mean per-dimension std (collapse: 0, ideal 1/sqrt(D)) of the "
                "batch's embeddings (alert: StreamSSLEmbeddingCollapse)",
                "none",
                (f"max by (instance) ({p}embedding_effective_rank)", "effective rank {{instance}}"),
                (f"max by (instance) ({p}embedding_std)", "std {{instance}}"),
            )
        )
        .with_panel(
            series(
                "Exports and promotion gate",
                "Exports by result and gate decisions, over an hour",
                "none",
                (f"sum by (result) (increase({p}exports_total[1h]))", "export {{result}}"),
                (f"sum by (decision) (increase({p}gate_decisions_total[1h]))", "gate {{decision}}"),
            )
        )
        .with_panel(
            series(
                "Data path health",
                "Skipped windows by reason, dead letters, redeliveries, consumer restarts (per second)",
                "ops",
                (f"sum by (reason) (rate({p}skipped_windows_total[{RATE}]))", "skipped {{reason}}"),
                (f"sum(rate({p}dead_letters_total[{RATE}]))", "dead letters"),
                (f"sum(rate({p}records_redelivered_total[{RATE}]))", "redelivered"),
                (f"sum(rate({p}consumer_restarts_total[{RATE}]))", "consumer restarts"),
            )
        )
    )


def serving_row(board: dashboard.Dashboard) -> dashboard.Dashboard:
    p = "streamssl_serving_"
    return (
        board.with_row(dashboard.Row("Serving"))
        .with_panel(
            single(
                "Requests /s",
                "API requests per second (probes excluded)",
                "reqps",
                f"sum(rate({p}requests_total{{{API}}}[{RATE}]))",
            )
        )
        .with_panel(
            single(
                "Error ratio",
                "Share of API requests answered with 5xx (SLO: under 1%, alert: StreamSSLServingErrors)",
                "percentunit",
                f'sum(rate({p}requests_total{{{API}, status=~"5.."}}[{RATE}]))'
                f" / sum(rate({p}requests_total{{{API}}}[{RATE}]))",
            )
        )
        .with_panel(
            single(
                "p99 latency",
                "API request duration, 99th percentile (SLO: 500 ms, alert: StreamSSLServingLatencyHigh)",
                "s",
                f"histogram_quantile(0.99, sum by (le) (rate({p}request_duration_seconds_bucket{{{API}}}[{RATE}])))",
            )
        )
        .with_panel(
            single("Replicas with a model", "Serving nodes with a model loaded", "none", f"sum({p}model_loaded)")
        )
        .with_panel(single("In flight", "HTTP requests being handled", "none", f"sum({p}in_flight_requests)"))
        .with_panel(single("Queue depth", "Requests waiting in the batching queues", "none", f"sum({p}queue_depth)"))
        .with_panel(
            series(
                "Request rate",
                "Requests per second by route and status",
                "reqps",
                (f"sum by (endpoint, status) (rate({p}requests_total[{RATE}]))", "{{endpoint}} {{status}}"),
            )
        )
        .with_panel(
            series(
                "Request latency",
                "Request duration quantiles per route (probes excluded)",
                "s",
                *quantiles(f"{p}request_duration_seconds", "endpoint", API),
            )
        )
        .with_panel(
            series(
                "Batch size",
                "Images (or windows) per inference batch: mean and 90th percentile",
                "none",
                (
                    f"sum by (kind) (rate({p}batch_size_sum[{RATE}]))"
                    f" / sum by (kind) (rate({p}batch_size_count[{RATE}]))",
                    "mean {{kind}}",
                ),
                (f"histogram_quantile(0.9, sum by (kind, le) (rate({p}batch_size_bucket[{RATE}])))", "p90 {{kind}}"),
            )
        )
        .with_panel(
            series(
                "Queue time",
                "Time a request waited in the batching queue before its batch started (what the HPA's queue-time "
                "metric averages)",
                "s",
                *quantiles(f"{p}queue_wait_seconds", "kind"),
            )
        )
        .with_panel(
            series(
                "Inference time",
                "One batch through onnxruntime (and scoring, for windows)",
                "s",
                *quantiles(f"{p}inference_duration_seconds", "kind"),
            )
        )
        .with_panel(
            series(
                "Model version",
                "The model version each replica serves, with its execution provider and precision",
                "none",
                (
                    f"max by (instance, version, provider, precision) ({p}model_info)",
                    "{{instance}}: v{{version}} {{provider}} {{precision}}",
                ),
            )
        )
        .with_panel(
            series(
                "Model reloads",
                "Attempts to load a new version by result and failure reason, over 15 minutes",
                "none",
                (f"sum by (result, reason) (increase({p}model_reloads_total[15m]))", "{{result}} {{reason}}"),
            )
        )
        .with_panel(
            series(
                "Stream mode",
                "Windows processed per second by result, result batches not acknowledged, and lag per partition",
                "none",
                (f"sum by (result) (rate({p}stream_windows_total[{RATE}]))", "windows/s {{result}}"),
                (f"sum(rate({p}stream_publish_errors_total[{RATE}]))", "publish errors/s"),
                (f"sum by (partition) ({p}stream_lag_messages)", "lag partition {{partition}}"),
            )
        )
    )


def anomaly_row(board: dashboard.Dashboard) -> dashboard.Dashboard:
    p = "streamssl_serving_anomaly_score"
    count = f"sum by (camera) (rate({p}_count{{{CAMERA}}}[15m]))"
    at_most_3 = f'sum by (camera) (rate({p}_bucket{{{CAMERA}, le="3.0"}}[15m]))'
    return (
        board.with_row(dashboard.Row("Anomaly scores per camera"))
        .with_panel(
            series(
                "Share of windows above z = 3",
                "Per camera over 15 minutes, and its usual share over the last day (a recording rule: needs the "
                "chart's rules). Alert StreamSSLCameraAnomalyRateHigh: over 5% and over 3 times the usual share",
                "percentunit",
                (f"({count} - {at_most_3}) / {count}", "15m {{camera}}"),
                (
                    f"max by (camera) (streamssl:serving_anomaly_score_above3:ratio_rate1d{{{CAMERA}}})",
                    "usual (1d) {{camera}}",
                ),
            )
        )
        .with_panel(
            series(
                "Anomaly z-score",
                "Quantiles of the windows' z-scores against the camera's running statistics (from the histogram's "
                "buckets: -2 to 10, so 10 reads as 10 or more)",
                "none",
                *quantiles(p, "camera", CAMERA),
            )
        )
        .with_panel(
            series(
                "Windows scored",
                "Windows given a z-score per second (none during a camera's warm-up, which restarts with each new "
                "model version)",
                "ops",
                (f"sum by (camera) (rate({p}_count{{{CAMERA}}}[{RATE}]))", "{{camera}}"),
            )
        )
    )


def build() -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard("StreamSSL")
        .uid("streamssl-overview")
        .description(
            "Ingest per camera, the continual trainer and the serving node (deploy/grafana/build_dashboard.py)"
        )
        .tags(["streamssl"])
        .editable()
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("browser")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            dashboard.QueryVariable("camera")
            .label("Camera")
            .datasource(DATASOURCE)
            .query("label_values(streamssl_ingest_camera_up, camera)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )
    return anomaly_row(serving_row(trainer_row(ingest_row(board))))


def render() -> str:
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write the JSON (default {OUT})")
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current == text:
            return 0
        diff = difflib.unified_diff(current.splitlines(), text.splitlines(), str(args.out), "generated", lineterm="")
        print("\n".join(list(diff)[:80]), file=sys.stderr)
        print(f"{args.out} is stale: run python deploy/grafana/build_dashboard.py", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
