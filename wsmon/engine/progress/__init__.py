"""Inside a running workset: Snakemake progress from its log, ETA, and actual Slurm usage and cost.

``snakelog`` parses the log as a stream, ``logsource`` reads only what was added (locally or over
ssh), ``eta`` turns finished steps into a rate, ``sacct`` turns Slurm job ids into vCPU-hours and
cost. Nothing here imports Textual, click or boto3.
"""
