"""What the catalog pages show, a module per page: the overview, a service's page, the dependency graph and the
teams; what they share is in :mod:`~portal.catalog.pages.common` (the views only render these; the templates
only lay them out). Every read goes through :mod:`portal.catalog.selectors`.

Every status is derived on read (:func:`~portal.catalog.status.service_status`,
:func:`~portal.catalog.status.instance_status`), never taken from the stored marks. Instances are never
deleted, so a long-lived service collects many ``gone`` ones: the pages read the current instances, a count
of the gone ones, and only the latest gone one (``service_status`` needs to know one exists), so the cost of
a page does not grow with history. The overview is a fixed handful of queries whatever the number of
services (tested).
"""
