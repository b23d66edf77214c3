"""Synthesis: the bridge between the prepared cases (`lightwork.data`) and the anomaly tasks
(`lightwork.anomalies`): `samples` turns a case (or one of its slices) into a seeded synthetic
sample, `preview` draws what each task does to an image."""
