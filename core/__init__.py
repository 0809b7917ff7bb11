"""The Ray-free foundation every layer stands on: settings, storage and its key layout, ids, job
records, the job runner and the errors a stage raises on purpose.

It imports nothing of serve_app, stages, graphs, deployments or ray (a test runs the grep)."""
