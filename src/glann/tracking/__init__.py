"""MLflow tracking: the per-job tracker, the store, the deferred journal, the invocation's runs."""
