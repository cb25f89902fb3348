"""Batch runs of the notebooks: the manifest (manifest), the run of a profile (runner), the Dask
cluster (cluster), what the client and a worker do for each run (execute, task), and the
notebooks' normal form (notebook_format)."""
