"""Server-rendered SVG charts, one module per kind: the dependency graph (:mod:`~portal.ui.charts.graph`), a
health history (:mod:`~portal.ui.charts.health`) and time-series lines (:mod:`~portal.ui.charts.timeseries`);
what they share is in :mod:`~portal.ui.charts.common`."""
