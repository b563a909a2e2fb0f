# Scheduler settings of a local run.
#
# Snakemake's job rate limiter (--max-jobs-per-timespan, default 100/1s) throttles submissions
# to a cluster. On a local run it throttles nothing, yet every scheduler pass that leaves jobs
# waiting for cores starts a timer for another pass one timespan later, which starts the next,
# and every finished job starts one more such chain: with many jobs waiting (a cohort's
# preprocessing on a few cores) the main process re-evaluates the waiting jobs hundreds of times
# a second and spends most of a core doing so. A longer timespan is no cure: Snakemake waits for
# the pending timers before it exits. So a local run drops the limiter when it starts (the
# scheduler exists by then); cluster runs keep it. This is the workflow's only `onstart` handler.
onstart:
    if workflow.local_exec and workflow.scheduler is not None:
        workflow.scheduler.job_rate_limiter = None
