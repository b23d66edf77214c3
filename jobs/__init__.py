"""lightwork.jobs."""
