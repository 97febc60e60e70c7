-- TimescaleDB only: anomaly scores are a time series like the samples they score.
SELECT create_hypertable('analytics.anomaly', 'time', chunk_time_interval => interval '7 days');
