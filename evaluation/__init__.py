"""lightwork.evaluation."""
