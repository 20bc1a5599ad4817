"""The cohort wing: many scans through the one ``detect()`` — BIDS datasets in, BIDS derivatives
out, in this process, on a Dask cluster or as parts of a job array, with a cohort report."""
