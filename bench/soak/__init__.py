"""The chaos soak (`python -m bench --only chaos`): minutes of jobs through a Sentinel
cluster while workers, the master and storage are killed and restarted. A soak, not a
micro-benchmark: it reports lost jobs (target 0) and the evidence, not a speed."""
