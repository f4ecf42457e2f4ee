"""Jobs that compose data_prep, the bundles and MLflow: demo, reproduction, reports, benchmarks."""
