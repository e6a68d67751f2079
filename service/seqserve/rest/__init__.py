"""The KServe V2 REST front end: a thin FastAPI adapter over the data plane."""
