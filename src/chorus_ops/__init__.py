"""The operator's side of chorus: the command line, the local services supervisor (PostgreSQL,
MLflow, Prefect, Dask, ``chorus serve``) and the deployments. It may import the flows
(``chorus_flows``) and the benchmarks (``chorus_bench``); the library (``chorus``) imports neither."""
