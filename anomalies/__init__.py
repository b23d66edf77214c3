"""lightwork.anomalies."""
