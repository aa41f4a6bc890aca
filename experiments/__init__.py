"""The vocabulary of albench (trial specs and their ids, errors, reference defaults, round records, the Parquet
layout), the datasets, the grid files, and the reports that read results."""
