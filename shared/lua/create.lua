-- create: store a new job and queue it with the scheduler (JobStore.create; no
-- wake-up token: the API's submission pushes those). Its KEYS and ARGV are
-- store_job's (store_job.lua). Returns the job's queue position.
-- uses: sched store_job
return store_job()
