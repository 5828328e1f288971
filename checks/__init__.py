"""Asset checks: Great Expectations for data, metric gates for models, sanity for predictions."""
