"""What the job dashboard's pages show, a module per page: the overview (charts, queues, workers, the last hour by
state), the task list (filters, keyset pages both ways), a task's page, and failures grouped; what they share is in
:mod:`~portal.jobs.pages.common` (the views only render these; the templates only lay them out).

Every read goes through :mod:`portal.jobs.selectors`; what is here is only what the pages need on top: the
query string ↔ :class:`~portal.jobs.selectors.TaskFilters`, the chart slots, and the known task names (from the
per-name totals, a small table, never ``DISTINCT`` over the jobs).
"""
