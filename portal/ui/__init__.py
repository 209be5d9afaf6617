"""What the portal's admin pages share: live regions (:mod:`portal.ui.live`) and server-rendered SVG charts
(:mod:`portal.ui.charts`)."""
