"""The platform's dashboards. Every query reads only what the ``grafana`` role may read."""

from __future__ import annotations

from typing import Final

from dashboards.model import MIN_REFRESH, Annotation, Dashboard, Panel, Variable

__all__ = ["DASHBOARDS", "FOLDER"]

FOLDER: Final = "Factory"
ASSET: Final = "${asset:sqlstring}"
TS: Final = ("time", "metric", "value")

# 1-minute rollups up to two days, hourly beyond: Grafana substitutes the range, so one
# query serves both and never scans raw samples for a month-long view.
ROLLUP: Final = """(
  SELECT bucket, tag_id, avg FROM telemetry.sample_1m
  WHERE $__timeTo()::timestamptz - $__timeFrom()::timestamptz <= interval '2 days' AND $__timeFilter(bucket)
  UNION ALL
  SELECT bucket, tag_id, avg FROM telemetry.sample_1h
  WHERE $__timeTo()::timestamptz - $__timeFrom()::timestamptz > interval '2 days' AND $__timeFilter(bucket)
)"""

OVERVIEW: Final = Dashboard(
    uid="factory-overview",
    title="Plant overview",
    folder=FOLDER,
    panels=(
        Panel(
            "Devices online",
            "SELECT count(*) FILTER (WHERE status = 'online') AS online,"
            " count(*) FILTER (WHERE status NOT IN ('online', 'retired')) AS offline FROM telemetry.device",
            ("online", "offline"),
            kind="stat",
            width=6,
        ),
        Panel(
            "Devices",
            "SELECT site, name AS device, status, last_seen, agent FROM telemetry.device"
            " ORDER BY status <> 'offline', site, name",
            ("site", "device", "status", "last_seen", "agent"),
            width=18,
        ),
        Panel(
            "OEE per line (latest shift)",
            "SELECT DISTINCT ON (site, line) site || '/' || line AS line, shift, bucket AS shift_start,"
            " availability, performance, quality, oee FROM analytics.oee WHERE period = 'shift'"
            " ORDER BY site, line, bucket DESC",
            ("line", "shift", "shift_start", "availability", "performance", "quality", "oee"),
            width=24,
            height=6,
        ),
        Panel(
            "Production per hour: actual and forecast (80 % interval)",
            # The latest stored forecast of each line (analytics.production_forecast, written every
            # 15 min by the production-forecast job) with its bounds, and the hours the OEE job counted.
            "SELECT time, metric, value FROM ("
            " SELECT f.hour AS time, f.site || '/' || f.line || ' ' || b.series AS metric, b.value"
            " FROM analytics.production_forecast f JOIN (SELECT site, line, max(made_at) AS made_at"
            " FROM analytics.production_forecast GROUP BY site, line) latest USING (site, line, made_at)"
            " CROSS JOIN LATERAL (VALUES ('forecast', f.expected), ('forecast low', f.lower),"
            " ('forecast high', f.upper)) b (series, value) WHERE $__timeFilter(f.hour)"
            " UNION ALL SELECT bucket, site || '/' || line || ' actual', total_count FROM analytics.oee"
            " WHERE period = 'hour' AND $__timeFilter(bucket)) points ORDER BY 1, 2",
            TS,
            kind="timeseries",
            width=24,
            time_from="+36h",  # the next 36 hours ...
            time_shift="12h",  # ... moved 12 hours back: the last 12 h counted, the next 24 forecast
            overrides=(
                {
                    "matcher": {"id": "byRegexp", "options": ".* forecast (low|high)$"},
                    "properties": [
                        {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [6, 4]}},
                        {"id": "custom.lineWidth", "value": 1},
                    ],
                },
            ),
        ),
        Panel(
            "Active anomalies",
            "SELECT started_at, site, asset, detector, peak_score"
            " FROM analytics.anomaly_episode WHERE ended_at IS NULL ORDER BY peak_score DESC LIMIT 50",
            ("started_at", "site", "asset", "detector", "peak_score"),
        ),
        Panel(
            "Open maintenance orders",
            "SELECT id, asset, priority, status, reason, created_at FROM erp.work_order"
            " WHERE kind = 'maintenance' AND status IN ('open', 'in_progress')"
            " ORDER BY array_position(ARRAY['urgent', 'high', 'normal', 'low'], priority), created_at",
            ("id", "asset", "priority", "status", "reason", "created_at"),
        ),
        Panel(
            "Points per second",
            "SELECT $__timeGroupAlias(bucket, '1m'), sum(count) / 60.0 AS points_per_s"
            " FROM telemetry.sample_1m WHERE $__timeFilter(bucket) GROUP BY 1 ORDER BY 1",
            ("time", "points_per_s"),
            kind="timeseries",
            width=24,
        ),
    ),
    refresh=MIN_REFRESH,  # the live screen: within 2 s of the plant
)

ASSET_DETAIL: Final = Dashboard(
    uid="factory-asset",
    title="Asset detail",
    folder=FOLDER,
    variables=(Variable("asset", "Asset", "SELECT DISTINCT asset FROM telemetry.tag ORDER BY 1"),),
    annotations=(
        Annotation(
            "Anomaly episodes",
            "SELECT started_at AS time, coalesce(ended_at, now()) AS timeend,"
            " detector || ' (peak ' || round(peak_score::numeric, 2) || ')' AS text"
            f" FROM analytics.anomaly_episode WHERE asset = {ASSET}"
            " AND started_at <= $__timeTo()::timestamptz"
            " AND coalesce(ended_at, now()) >= $__timeFrom()::timestamptz",
        ),
    ),
    panels=(
        Panel(
            "Live values",
            "SELECT t.name AS tag, s.value, t.unit, s.time FROM telemetry.tag t"
            " JOIN LATERAL (SELECT time, value FROM telemetry.sample WHERE tag_id = t.id"
            f" ORDER BY time DESC LIMIT 1) s ON true WHERE t.asset = {ASSET} ORDER BY t.name",
            ("tag", "value", "unit", "time"),
            width=24,
            height=6,
        ),
        Panel(
            "Trend (1-minute or 1-hour averages)",
            "SELECT $__timeGroupAlias(r.bucket, $__interval),"
            f" t.name AS metric, avg(r.avg) AS value FROM {ROLLUP} r JOIN telemetry.tag t ON t.id = r.tag_id"
            f" WHERE t.asset = {ASSET} GROUP BY 1, 2 ORDER BY 1",
            TS,
            kind="timeseries",
            width=24,
        ),
        Panel(
            "Anomaly score by tag",
            "SELECT $__timeGroupAlias(a.time, $__interval),"
            " coalesce(t.name, a.detector) AS metric, max(a.score) AS value FROM analytics.anomaly a"
            f" LEFT JOIN telemetry.tag t ON t.id = a.tag_id WHERE a.asset = {ASSET} AND $__timeFilter(a.time)"
            " GROUP BY 1, 2 ORDER BY 1",
            TS,
            kind="timeseries",
        ),
        Panel(
            "What moved: per-tag contributions to the anomaly score",
            "SELECT $__timeGroupAlias(a.time, $__interval), c.key AS metric, max(c.value::float8) AS value"
            " FROM analytics.anomaly a CROSS JOIN LATERAL jsonb_each_text(a.details -> 'contributions') c"
            f" WHERE a.asset = {ASSET} AND $__timeFilter(a.time) GROUP BY 1, 2 ORDER BY 1",
            TS,
            kind="timeseries",
        ),
        Panel(
            "Remaining useful life and failure probability",
            "SELECT time, rul, failure_prob"
            f" FROM maintenance.asset_health WHERE asset = {ASSET} AND $__timeFilter(time) ORDER BY time",
            ("time", "rul", "failure_prob"),
            kind="timeseries",
        ),
    ),
)

MAINTENANCE: Final = Dashboard(
    uid="factory-maintenance",
    title="Maintenance",
    folder=FOLDER,
    panels=(
        Panel(
            "Asset health by risk",
            "SELECT site, asset, failure_prob, rul, time FROM (SELECT DISTINCT ON (site, asset)"
            " site, asset, failure_prob, rul, time FROM maintenance.asset_health ORDER BY site, asset, time DESC)"
            " latest ORDER BY failure_prob DESC, rul",
            ("site", "asset", "failure_prob", "rul", "time"),
            width=24,
        ),
        Panel(
            "Maintenance work orders",
            "SELECT id, asset, status, priority, reason, created_at"
            " FROM erp.work_order WHERE kind = 'maintenance' AND $__timeFilter(created_at)"
            " ORDER BY created_at DESC LIMIT 200",
            ("id", "asset", "status", "priority", "reason", "created_at"),
        ),
        Panel(
            "Spare parts for open orders",
            "SELECT w.id AS work_order, w.asset, p.sku, p.name, wp.quantity,"
            " coalesce(sum(s.on_hand - s.reserved), 0) AS available FROM erp.work_order w"
            " JOIN erp.work_order_part wp ON wp.work_order_id = w.id JOIN erp.product p ON p.id = wp.product_id"
            " LEFT JOIN erp.stock s ON s.product_id = p.id WHERE w.status IN ('open', 'in_progress')"
            " GROUP BY w.id, w.asset, p.sku, p.name, wp.quantity ORDER BY w.id",
            ("work_order", "asset", "sku", "name", "quantity", "available"),
        ),
    ),
    time_from="now-30d",
    refresh="1m",
)

ERP: Final = Dashboard(
    uid="factory-erp",
    title="Production and ERP",
    folder=FOLDER,
    panels=(
        Panel(
            "Orders per day",
            "SELECT $__timeGroupAlias(created_at, '1d'), count(*) AS orders"
            " FROM erp.sales_order WHERE status <> 'cancelled' AND $__timeFilter(created_at) GROUP BY 1 ORDER BY 1",
            ("time", "orders"),
            kind="timeseries",
        ),
        Panel(
            "Revenue per day (net)",
            "SELECT $__timeGroupAlias(o.created_at, '1d'),"
            " sum(l.quantity * l.unit_price) AS revenue FROM erp.sales_order o"
            " JOIN erp.sales_order_line l ON l.order_id = o.id"
            " WHERE o.status IN ('confirmed', 'shipped', 'invoiced') AND $__timeFilter(o.created_at)"
            " GROUP BY 1 ORDER BY 1",
            ("time", "revenue"),
            kind="timeseries",
        ),
        Panel(
            "Stock vs reorder point",
            "SELECT p.sku, p.name, coalesce(sum(s.on_hand), 0) AS on_hand,"
            " coalesce(sum(s.reserved), 0) AS reserved, p.reorder_point FROM erp.product p"
            " LEFT JOIN erp.stock s ON s.product_id = p.id WHERE p.active GROUP BY p.id"
            " ORDER BY coalesce(sum(s.on_hand), 0) - p.reorder_point, p.sku",
            ("sku", "name", "on_hand", "reserved", "reorder_point"),
        ),
        Panel(
            "Receivables aging",
            # Every bucket, in aging order, also when it is empty: "nothing overdue" is an answer.
            "SELECT b.bucket, coalesce(sum(i.gross - i.paid - i.credited), 0) AS outstanding FROM (VALUES"
            " (1, 'not due', -100000, 0), (2, '1-30 days', 1, 30), (3, '31-60 days', 31, 60),"
            " (4, 'over 60 days', 61, 100000)) b (rank, bucket, first_day, last_day)"
            " LEFT JOIN erp.invoice i ON i.kind = 'invoice' AND i.gross - i.paid - i.credited > 0"
            " AND current_date - i.due_date BETWEEN b.first_day AND b.last_day"
            " GROUP BY b.rank, b.bucket ORDER BY b.rank",
            ("bucket", "outstanding"),
            kind="bargauge",
        ),
        Panel(
            "Production work orders: planned vs produced",
            "SELECT w.id, w.asset, p.sku, w.status,"
            " w.planned_quantity, w.produced_quantity FROM erp.work_order w LEFT JOIN erp.product p"
            " ON p.id = w.product_id WHERE w.kind = 'production' AND $__timeFilter(w.created_at)"
            " ORDER BY w.created_at DESC LIMIT 200",
            ("id", "asset", "sku", "status", "planned_quantity", "produced_quantity"),
            width=24,
        ),
    ),
    time_from="now-30d",
    refresh=MIN_REFRESH,  # order → pay → dashboard within 2 s
)

PLATFORM: Final = Dashboard(
    uid="factory-platform",
    title="Platform health",
    folder=FOLDER,
    panels=(
        Panel(
            "Ingested points per second",
            "SELECT $__timeGroupAlias(bucket, '1m'), sum(count) / 60.0"
            " AS points_per_s FROM telemetry.sample_1m WHERE $__timeFilter(bucket) GROUP BY 1 ORDER BY 1",
            ("time", "points_per_s"),
            kind="timeseries",
        ),
        Panel(
            "Seconds since each device was last heard",
            "SELECT site || '/' || name AS device,"
            " extract(epoch FROM now() - last_seen) AS lag_s FROM telemetry.device"
            " WHERE last_seen IS NOT NULL ORDER BY lag_s DESC",
            ("device", "lag_s"),
            kind="bargauge",
            unit="s",
        ),
        Panel(
            "Edge buffer depth (points waiting on each device)",
            "SELECT $__timeGroupAlias(s.time, $__interval), d.site || '/' || d.name AS metric, max(s.value) AS value"
            " FROM telemetry.sample s JOIN telemetry.tag t ON t.id = s.tag_id"
            " JOIN telemetry.device d ON d.id = t.device_id"
            " WHERE t.name = 'agent.buffer_points' AND $__timeFilter(s.time) GROUP BY 1, 2 ORDER BY 1",
            TS,
            kind="timeseries",
        ),
        Panel(
            "Dead letters by reason",
            "SELECT $__timeGroupAlias(received_at, $__interval),"
            " split_part(reason, ':', 1) AS metric, count(*) AS value FROM telemetry.dead_letter"
            " WHERE $__timeFilter(received_at) GROUP BY 1, 2 ORDER BY 1",
            TS,
            kind="timeseries",
            width=24,
        ),
        Panel(
            "Lost batches (batch numbers a device sent that never arrived)",
            "SELECT $__timeGroupAlias(e.time, $__interval), d.site || '/' || d.name AS metric,"
            " sum((e.data ->> 'batches')::bigint) AS value FROM telemetry.event e"
            " JOIN telemetry.device d ON d.id = e.device_id"
            " WHERE e.kind = 'seq_gap' AND $__timeFilter(e.time) GROUP BY 1, 2 ORDER BY 1",
            TS,
            kind="timeseries",
            width=24,
        ),
    ),
)

DASHBOARDS: Final = (OVERVIEW, ASSET_DETAIL, MAINTENANCE, ERP, PLATFORM)
